"""Model aliases, timm construction with weights, and artifacts (checkpoints by ID)."""
