"""kinemask-jax: velocity-controlled image-to-video diffusion trained on synthetic rigid-body scenes.

The packages are the subsystems (README, "Architecture"): model/ (the network, text, conditioning,
diffusion), store/ (checkpoints, weights folders, loading a trained model), training/ (the one training
loop and its two runs: the video model's curriculum and the outcome predictor's; input pipeline),
sampling/ (the API, its units, segmentation, media), outcome/ (the outcome predictor) and evaluation/
(metric table, tracker, baselines, scoring, report). The modules at this level are the commands (`python -m kinemask_jax.<command>`): train,
sample, evaluate, train_outcome, export, express, demo, model_info.

`KineMaskPipeline` (kinemask_jax/sampling/api.py) is the sampling API; it is imported lazily so that
`import kinemask_jax.<module>` stays light.
"""

__all__ = ["KineMaskPipeline", "GenerationResult", "InputError", "CheckpointError", "mask_from_point"]


def __getattr__(name):
  if name in __all__:
    from kinemask_jax.sampling import api
    return getattr(api, name)
  raise AttributeError(f"module 'kinemask_jax' has no attribute {name!r}")
