"""Model aliases, timm construction with weights, formats and artifacts (checkpoints by ID)."""

# The torch-family formats register their loaders on import (the format registry imports no
# registrant), so every artifact this package can name can also be loaded.
from defectopt.models import lowbit, pruned, torch_quantized  # noqa: F401,E402
