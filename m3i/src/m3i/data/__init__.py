"""Data of m3i: the embedded captioned shapes, ImageFolder and WebDataset-shard sources, their weighted mixture,
the two-view + mix-mask transform and the caption tokenizers."""
