"""`defectopt train` commands (being written)."""
