"""The options of the training entry points (finetune-teacher, distill, and the recovery and QAT
loops that reuse the engine): plain dataclasses that hold every default, importable without
torch so the CLI can show them as its defaults and the pipeline can build them from TOML.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from defectopt.errors import DefectoptError

BALANCE_CHOICES = ("none", "loss", "sampler")
AMP_CHOICES = ("none", "bf16", "fp16")

# Recipe fields that must match when a run is resumed (device, verbosity and loader workers may change).
RECIPE_FIELDS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "min_lr_ratio", "grad_accum",
                  "seed", "balance", "amp", "alpha", "temperature", "augment", "rotation_deg", "clip_grad_norm")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    grad_accum: int = 1
    seed: int = 0
    balance: str = "none"  # none | loss | sampler
    amp: str = "none"  # none | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda
    alpha: float = 0.0  # KD weight: 0 = plain CE (no teacher needed)
    temperature: float = 4.0
    augment: bool = True
    rotation_deg: float = 10.0
    clip_grad_norm: float | None = None
    workers: int = 0  # DataLoader worker processes
    eval_batch_size: int = 64
    quiet: bool = False

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (self.warmup_epochs >= 0, f"warm-up epochs must be >= 0, got {self.warmup_epochs}"),
            (0 <= self.min_lr_ratio <= 1, f"min lr ratio must be in [0, 1], got {self.min_lr_ratio}"),
            (self.grad_accum >= 1, f"gradient accumulation must be >= 1, got {self.grad_accum}"),
            (self.balance in BALANCE_CHOICES, f"--balance must be one of {', '.join(BALANCE_CHOICES)}, got '{self.balance}'"),
            (self.amp in AMP_CHOICES, f"--amp must be one of {', '.join(AMP_CHOICES)}, got '{self.amp}'"),
            (0.0 <= self.alpha <= 1.0, f"--alpha must be in [0, 1], got {self.alpha}"),
            (self.temperature > 0, f"--temperature must be > 0, got {self.temperature}"),
            (self.workers >= 0, f"--workers must be >= 0, got {self.workers}"),
        ]
        for ok, message in checks:
            if not ok:
                raise DefectoptError(message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def recipe(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in RECIPE_FIELDS}



FINETUNE = "finetune"
DISTILL = "distill"

# Default learning rates when --lr is not given (AdamW): a pretrained network is fine-tuned
# gently, a randomly initialised one needs a larger step, a linear probe trains a single layer.
LR_FINETUNE_PRETRAINED = 1e-4
LR_FROM_SCRATCH = 1e-3
LR_LINEAR_PROBE = 5e-3
# distill's KD weight unless told otherwise (α = 0 is the no-KD baseline with the same recipe)
KD_ALPHA = 0.5


@dataclass
class RunRequest:
    """Everything that defines a finetune or distill run (stored in the row for --resume)."""

    command: str  # finetune | distill
    model: str  # the alias trained: the teacher (finetune) or the student (distill)
    data: str | None = None  # dataset spec; distill defaults to the teacher's dataset
    split_seed: int = 0
    img_size: int | None = None  # finetune default 224; distill default: the teacher's size
    pretrained: bool = True
    weights: str | None = None
    freeze_backbone: bool = False
    teacher: str | None = None  # distill: model ID or alias
    lr: float | None = None  # None: a default chosen from the init (see LR_* above)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"] = self.train.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRequest:
        d = dict(d)
        d["train"] = TrainConfig.from_dict(d.get("train", {}))
        return cls(**d)


