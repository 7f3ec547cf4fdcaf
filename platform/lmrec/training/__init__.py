"""Ray Train assembly: the per-worker loop, sharding, checkpoints and the trainer."""
