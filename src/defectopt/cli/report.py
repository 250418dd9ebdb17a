"""`defectopt report` commands (being written)."""
