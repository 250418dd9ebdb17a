"""Options of `search` (the entry point `search.api.run_search`) and of the space it searches:
every default in one place, importable without torch or optuna (the CLI shows them as its
defaults; a `--space FILE.toml` overrides `SearchSpace` fields by name)."""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from defectopt.errors import DefectoptError

OBJECTIVES = ("recall", "latency", "size")  # recall is maximized; latency (ms/image) and size (MB) minimized
SAMPLERS = ("tpe", "nsga2")
NO_QUANTIZATION = "none"
SEARCH_QUANTIZE = (NO_QUANTIZATION, "static", "qat")  # FP32 | INT8 post-training | INT8 quantization-aware


@dataclass(frozen=True)
class SearchSpace:
    """The choices a trial samples from. A list of one value fixes that choice."""

    # Students: an alias with imported ImageNet weights (`defectopt weights import`) starts from
    # them; others start from the timm hub with `pretrained`, else from random initialization.
    students: tuple[str, ...] = ("efficientnet_lite0", "efficientnet_lite1", "mobilevit_s", "vit_t16")
    img_sizes: tuple[int, ...] = (96, 128, 160)
    alphas: tuple[float, ...] = (0.0, 0.5, 0.9)  # KD weight; 0 = the no-KD recipe
    temperatures: tuple[float, ...] = (2.0, 4.0)  # sampled only when alpha > 0
    prune_ratios: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7)  # 0 = not pruned
    quantize: tuple[str, ...] = SEARCH_QUANTIZE
    backends: tuple[str, ...] = ("openvino", "onnxruntime")  # the runtime the model is timed and shipped in
    keep_fp: tuple[int, ...] = (0, 2)  # static INT8: the N most sensitive layers kept in float
    # the recipe every trial shares (not searched: changing it would make trials incomparable)
    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-3
    warmup_epochs: float = 0.5
    balance: str = "none"  # none | loss | sampler: class balancing of the student's training (imbalanced data)
    prune_finetune_epochs: int = 2
    qat_epochs: int = 2
    calib_images: int = 256
    pretrained: bool = False  # timm hub weights for students without imported ones (needs the hub)

    def validate(self) -> None:
        from defectopt.models.registry import get

        lists = {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), tuple)}
        for name, values in lists.items():
            if not values:
                raise DefectoptError(f"search space: {name} is empty; give at least one value")
        for alias in self.students:
            get(alias)  # one-line error listing the known aliases
        checks = [
            (all(isinstance(s, int) and s >= 32 for s in self.img_sizes), f"img_sizes must be integers >= 32, got {list(self.img_sizes)}"),
            (all(0 <= a <= 1 for a in self.alphas), f"alphas must be in [0, 1], got {list(self.alphas)}"),
            (all(t > 0 for t in self.temperatures), f"temperatures must be > 0, got {list(self.temperatures)}"),
            (all(0 <= r < 1 for r in self.prune_ratios), f"prune_ratios must be in [0, 1), got {list(self.prune_ratios)}"),
            (all(q in SEARCH_QUANTIZE for q in self.quantize), f"quantize takes {', '.join(SEARCH_QUANTIZE)}, got {list(self.quantize)}"),
            (all(b in ("openvino", "onnxruntime") for b in self.backends), f"backends takes openvino, onnxruntime; got {list(self.backends)}"),
            (all(isinstance(k, int) and k >= 0 for k in self.keep_fp), f"keep_fp must be integers >= 0, got {list(self.keep_fp)}"),
            (self.balance in ("none", "loss", "sampler"), f"balance must be none, loss or sampler, got '{self.balance}'"),
            (self.epochs >= 1 and self.batch_size >= 1 and self.lr > 0, "epochs, batch_size and lr must be positive"),
            (self.prune_finetune_epochs >= 0 and self.qat_epochs >= 1, "prune_finetune_epochs must be >= 0 and qat_epochs >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise DefectoptError(f"search space: {message}")


@dataclass(frozen=True)
class SearchOptions:
    teacher: str = ""  # model ID or alias (its latest ready model): the KD teacher; its dataset is searched
    min_recall: float = 0.0  # the floor: a constraint on val recall, then the answer's test CI lower bound
    data: str | None = None  # default: the teacher's dataset
    split_seed: int = 0
    device: str = "cpu"
    trials: int | None = None  # total finished trials of this search (resumed ones count); None with no time: 12
    time_budget: float | None = None  # seconds of wall time for this invocation
    name: str | None = None  # the search's name (its Optuna study); None: derived from teacher and floor
    resume: bool = False  # continue the named search (it must exist)
    space: SearchSpace = field(default_factory=SearchSpace)
    objectives: tuple[str, ...] = ("recall", "latency")
    sampler: str = "tpe"
    startup_trials: int = 4  # random trials before TPE models the space (NSGA-II: its population size)
    batch_size: int = 1  # the latency objective's batch size
    threads: int | None = None  # None: physical cores
    min_iters: int = 20  # timed runs per trial latency (the final confirmation uses bench's full budget)
    min_time: float = 1.0  # seconds per trial latency, at least
    early_stop: bool = True
    early_stop_min_curves: int = 2  # finished student runs needed before the rule stops anything (early_stop.MIN_CURVES)
    confirm: bool = True  # measure the val Pareto set on the test split at the end
    compare: tuple[str, ...] = ()  # "ID" or "ID:BACKEND": models (e.g. a hand-built pick) timed interleaved with the answer
    seed: int = 0
    out: str | None = None  # folder for the Pareto plot; default reports/<name>
    quiet: bool = False

    DEFAULT_TRIALS = 12

    def validate(self) -> None:
        checks = [
            (bool(str(self.teacher).strip()), "search needs --teacher ID|ALIAS (a fine-tuned teacher, e.g. from finetune-teacher)"),
            (0 < self.min_recall <= 1, f"--min-recall must be in (0, 1], got {self.min_recall}"),
            (self.trials is None or self.trials >= 1, f"--trials must be >= 1, got {self.trials}"),
            (self.time_budget is None or self.time_budget > 0, "--time must be positive"),
            (self.objectives[:1] == ("recall",) and len(self.objectives) >= 2
             and all(o in OBJECTIVES for o in self.objectives) and len(set(self.objectives)) == len(self.objectives),
             f"--objectives must start with recall and add latency and/or size, got {','.join(self.objectives)}"),
            (self.sampler in SAMPLERS, f"--sampler must be one of {', '.join(SAMPLERS)}, got '{self.sampler}'"),
            (self.startup_trials >= 1, "--startup-trials must be >= 1"),
            (self.early_stop_min_curves >= 1, "--early-stop-min-curves must be >= 1"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.min_iters >= 3 and self.min_time >= 0, "--min-iters must be >= 3 and --min-time >= 0"),
            (self.device in ("cpu", "cuda"), f"--device must be cpu or cuda, got '{self.device}'"),
            (self.name is None or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", self.name) is not None,
             f"search name '{self.name}' must be letters, digits, '.', '_' or '-' (at most 64)"),
            (not self.resume or self.name is not None, "resuming needs the search's name"),
            (all(re.fullmatch(r"\d+(:(openvino|onnxruntime|torch|tensorrt|litert))?", c) for c in self.compare),
             f"--compare takes model IDs, optionally with a runtime (11,2:openvino); got {','.join(self.compare)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise DefectoptError(message)
        self.space.validate()

    @property
    def max_trials(self) -> int | None:
        if self.trials is not None:
            return self.trials
        return None if self.time_budget is not None else self.DEFAULT_TRIALS


def parse_duration(text: str) -> float:
    """'90m', '2h', '1h30m', '45s' or plain seconds -> seconds."""
    t = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        value = float(t)
    else:
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", t)
        if not t or parts is None or not any(parts.groups()):
            raise DefectoptError(f"--time takes a duration like 90m, 2h, 1h30m or 3600; got '{text}'")
        h, m, s = (float(g) if g else 0.0 for g in parts.groups())
        value = h * 3600 + m * 60 + s
    if not math.isfinite(value) or value <= 0:
        raise DefectoptError(f"--time must be positive; got '{text}'")
    return value


def load_space(path: str | Path | None, base: SearchSpace | None = None) -> SearchSpace:
    """The default space with the fields a TOML file sets (a `[space]` table or top-level keys)."""
    from defectopt.options import build

    base = base or SearchSpace()
    if path is None:
        return base
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DefectoptError(f"search space file {p} not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DefectoptError(f"cannot read search space {p}: {exc}") from None
    table = raw.get("space", raw)
    if not isinstance(table, dict):
        raise DefectoptError(f"search space {p}: [space] must be a table")
    values = {}
    for key, value in table.items():
        values[key] = tuple(value) if isinstance(value, list) else value
    current = {f.name: getattr(base, f.name) for f in fields(base)}
    merged = build(SearchSpace, {**current, **values}, where=f"search space {p}")
    return merged
