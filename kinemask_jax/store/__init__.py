"""How trained models are kept: run checkpoints (checkpoints.py), weights folders (weights.py), and finding
and loading a video model from either or from the shipped weights (models.py)."""
