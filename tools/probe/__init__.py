"""Linear probes (HEAR / SUPERB style) of a frozen student or teacher on a labeled manifest."""
