"""Who wrote it: attribution by a labelled model (score.py) and its honest measurement by folds,
beside the standard methods (folds.py)."""
