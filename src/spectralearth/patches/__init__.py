"""Curated patches: grid and location registry, per-scene curation, index and shards."""
