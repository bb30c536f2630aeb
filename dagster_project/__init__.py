"""Dagster wiring for spectralearth: thin assets over the library (`spectralearth`)."""
