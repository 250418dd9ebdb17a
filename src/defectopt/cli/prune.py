"""`defectopt prune` commands (being written)."""
