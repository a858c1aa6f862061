"""audistill tools/bench."""
