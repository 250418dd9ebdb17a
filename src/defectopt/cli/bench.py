"""`defectopt bench` commands (being written)."""
