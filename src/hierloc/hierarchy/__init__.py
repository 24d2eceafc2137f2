"""HierLoc's entity hierarchy: the tree built from labelled metadata (paper Algorithm 1: country
→ region → subregion → city, mean coordinates, mean image and text embeddings), the hierarchy
folder's format, and the entity table a model folder carries. Imports no model."""
