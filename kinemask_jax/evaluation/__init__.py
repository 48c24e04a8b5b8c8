"""Evaluation: the metric table (metrics.py), the object tracker (tracking.py), the baselines (baselines.py),
scoring a model against them (score.py) and the report (report.py)."""
