"""The training engine: the `Learner` and its callbacks, data, models, meters, checkpoints, feedback, preflight checks.
Imports the core and `astlab.config`; knows no method family."""
