"""Hardware-aware multi-objective search (`defectopt search`)."""
