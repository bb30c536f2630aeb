"""Assets grouped by domain: ingest, curate, pretrain, evaluate."""
