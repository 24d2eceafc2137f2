"""Training: configs, data on precomputed features, the generic loop (``loop.Trainer``: rank
and world passed in, checkpoints, exact resume), each model's steps (``hierloc``,
``geosurge``), and the entry point's process setup (``runtime``)."""
