"""Training data: curated patch shards (``shards``) and spatial augmentations (``augment``)."""
