"""kinemask-jax: velocity-controlled image-to-video diffusion trained on synthetic rigid-body scenes."""
