"""The outcome predictor (predictor.py): from the first frame and the push, what will happen, as a caption;
the sampling API's prompt="auto". It trains with the house's training loop (kinemask_jax/training/outcome.py)."""
