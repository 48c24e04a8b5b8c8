"""Sampling: the API (api.py: KineMaskPipeline), its units (units.py), point-to-mask segmentation
(segmentation.py) and video files (media.py). The inference path: nothing here imports training or
evaluation code."""
