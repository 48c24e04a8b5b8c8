"""The KineMask video diffusion transformer (dit.py), its building blocks (layers.py) and its cost (cost.py)."""

from kinemask_jax.model.dit import VideoDiT, trainable_filter

__all__ = ["VideoDiT", "trainable_filter"]
