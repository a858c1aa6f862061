"""audistill train."""
