"""Training engine: optimizers and schedules, kNN evaluation, checkpoints, the loop."""
