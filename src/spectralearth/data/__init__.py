"""Training data: datasets over the patch store (``dataset``), legacy shards (``shards``) and
spatial augmentations (``augment``)."""
