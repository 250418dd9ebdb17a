"""`defectopt pipeline` commands (being written)."""
