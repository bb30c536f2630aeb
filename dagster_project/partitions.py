"""Partitions: one per EnMAP product (dynamic: the archive sensor adds new ones)."""

import dagster as dg

scenes_partitions = dg.DynamicPartitionsDefinition(name="scenes")
