"""Training, testing, checkpoints, distributed launch, meters and logging."""
