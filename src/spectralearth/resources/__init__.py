"""Packaged data tables (band tables with their provenance)."""
