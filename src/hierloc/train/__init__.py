"""Training: configs, data on precomputed features, the loop (a generator), checkpoints."""
