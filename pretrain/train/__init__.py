"""Training: the config tree, the composition root (build.py: a config becomes a run), the trainer on Accelerate,
the optimizer and schedule, the budget, checkpoints, evaluation, metrics, and the run directory's layout."""
