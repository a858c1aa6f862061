"""audistill.shards: the teacher-feature bank (catalog, layouts, codecs, readers, writers)."""

__version__ = "0.1.0"
