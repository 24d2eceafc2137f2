"""Data: metadata readers and validation, feature stores (``FeatureStore.lookup``), guarded
artefact readers, model-folder manifests and ``sources.json`` (``manifests``), atomic writers
and output checks (``writers``), S2 cells, and the offline benchmark's builder. Trains nothing."""
