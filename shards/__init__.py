"""audistill shards."""
