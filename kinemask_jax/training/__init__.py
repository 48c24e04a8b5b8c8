"""Training: the one loop every model trains with (loop.py), its state and jitted step (trainer.py), and the
two runs on it: the video model's two-stage curriculum (video.py, with curriculum.py) and the outcome
predictor's (outcome.py); the input pipeline (input_pipeline.py) feeds both."""
