"""The lab: `train` (a config to a results file), the CLIs over it (astlab-run / -sweep / -analyze / -compare / -tune /
-imagenette), the equal-compute comparison and its verdict."""
