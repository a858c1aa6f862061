"""audistill extract."""
