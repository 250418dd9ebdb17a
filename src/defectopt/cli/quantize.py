"""`defectopt quantize` commands (being written)."""
