"""Workflows over the library: ``compare`` (several models trained and evaluated on the same
split, cached by stage), ``ablate`` (the papers' ablation tables) and ``demo`` (the whole
pipeline on the offline benchmark). They talk to model folders through ``hierloc.locate``
only and hold no model maths."""
