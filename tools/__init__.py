"""audistill tools."""
