"""Options of `prune` (the entry point `compress.prune.api.prune_models`): every default in one
place, importable without torch (the CLI shows them, the pipeline builds them from TOML)."""

from __future__ import annotations

from dataclasses import dataclass

from defectopt.errors import DefectoptError
from defectopt.models.formats import FORMAT_PRUNED, FORMAT_TORCH

STRUCTURED = "structured"
UNSTRUCTURED = "unstructured"
METHODS = (STRUCTURED, UNSTRUCTURED)
# Float PyTorch forms: the only ones pruning can work on (quantized or exported models cannot).
PRUNABLE_FORMATS = (FORMAT_TORCH, FORMAT_PRUNED)


@dataclass(frozen=True)
class PruneOptions:
    model: str = ""  # the model to prune: an ID, or an alias meaning its latest ready model
    ratios: tuple[float, ...] = (0.5,)  # one pruned model per ratio
    method: str = STRUCTURED
    importance: str = "l1"
    global_pruning: bool = False
    iterative_steps: int = 1
    round_to: int = 8
    finetune_epochs: int = 2
    kd_from: str | None = None
    alpha: float = 0.5  # KD weight when kd_from is set
    temperature: float = 4.0
    lr: float = 1e-4  # recovery starts from trained weights: a fine-tuning rate, not a from-scratch one
    batch_size: int = 32
    calib_batches: int = 4  # train batches whose gradients score channels for taylor importance
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    data: str | None = None  # dataset spec; default: the parent's dataset
    split_seed: int = 0
    quiet: bool = False


def validate_ratio(ratio: float) -> float:
    if not 0 < ratio < 1:
        raise DefectoptError(f"pruning ratio must be between 0 and 1 (exclusive), got {ratio:g}")
    return float(ratio)


def parse_ratios(text: str) -> list[float]:
    """'0.2,0.4,0.6' -> [0.2, 0.4, 0.6], each validated."""
    ratios = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise DefectoptError(f"--ratios takes comma-separated numbers like 0.2,0.4,0.6; got '{part}'") from None
        ratios.append(validate_ratio(value))
    if not ratios:
        raise DefectoptError("--ratios is empty; give e.g. 0.2,0.4,0.6")
    return ratios
