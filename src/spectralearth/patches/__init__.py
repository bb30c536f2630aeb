"""Curated patches: the location grid and registry (``grid``), per-scene curation
(``curate``), the one stored copy and its versioned index (``store``), the checked reader
every consumer opens (``reader``), band statistics (``stats``), released trees
(``release``), shard-era folders (``migrate``) and who may curate at once (``lock``)."""
