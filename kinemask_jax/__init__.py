"""kinemask-jax: velocity-controlled image-to-video diffusion trained on synthetic rigid-body scenes.

`KineMaskPipeline` (kinemask_jax/pipeline.py) is the sampling API; it is imported lazily so that
`import kinemask_jax.<module>` stays light.
"""

__all__ = ["KineMaskPipeline", "GenerationResult", "InputError", "CheckpointError", "mask_from_point"]


def __getattr__(name):
  if name in __all__:
    from kinemask_jax import pipeline
    return getattr(pipeline, name)
  raise AttributeError(f"module 'kinemask_jax' has no attribute {name!r}")
