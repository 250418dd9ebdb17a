"""Metric names, units, directions and one-line meanings, defined once.

bench writes measurement rows under these names; the `tradeoff` view, Pareto filtering,
`--min-recall` selection and plots read the direction from here.
"""

from __future__ import annotations

from dataclasses import dataclass

MAXIMIZE = "max"
MINIMIZE = "min"


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str  # MAXIMIZE | MINIMIZE
    unit: str
    help: str


_METRICS = [
    # task metrics (frozen test split)
    Metric("recall", MAXIMIZE, "", "defect recall at the stored threshold: defects caught / defects (binary); macro recall (multi-class)"),
    Metric("recall_ci_low", MAXIMIZE, "", "lower end of the 95% CI of recall (binary: Clopper-Pearson; multi-class: seeded bootstrap)"),
    Metric("recall_ci_high", MAXIMIZE, "", "upper end of the 95% CI of recall (binary: Clopper-Pearson; multi-class: seeded bootstrap)"),
    Metric("precision", MAXIMIZE, "", "defect precision: true defects / images flagged defect"),
    Metric("precision_ci_low", MAXIMIZE, "", "lower end of the 95% Clopper-Pearson CI of precision (binary)"),
    Metric("precision_ci_high", MAXIMIZE, "", "upper end of the 95% Clopper-Pearson CI of precision (binary)"),
    Metric("f1", MAXIMIZE, "", "harmonic mean of precision and recall"),
    Metric("fnr", MINIMIZE, "", "false-negative rate = 1 - recall: defects shipped as good"),
    Metric("fnr_ci_low", MINIMIZE, "", "lower end of the 95% CI of FNR (1 - recall's upper end)"),
    Metric("fnr_ci_high", MINIMIZE, "", "upper end of the 95% CI of FNR (1 - recall's lower end)"),
    Metric("accuracy", MAXIMIZE, "", "fraction of test images classified correctly"),
    Metric("auroc", MAXIMIZE, "", "area under the ROC curve of the defect score"),
    Metric("recall_argmax", MAXIMIZE, "", "defect recall at argmax (no tuned threshold)"),
    Metric("precision_argmax", MAXIMIZE, "", "defect precision at argmax"),
    Metric("f1_argmax", MAXIMIZE, "", "F1 at argmax"),
    Metric("fnr_argmax", MINIMIZE, "", "false-negative rate at argmax"),
    Metric("accuracy_argmax", MAXIMIZE, "", "accuracy at argmax"),
    Metric("tp", MAXIMIZE, "images", "confusion count at the stored threshold: defects flagged (true positives)"),
    Metric("fn", MINIMIZE, "images", "confusion count: defects passed as good (false negatives)"),
    Metric("fp", MINIMIZE, "images", "confusion count: good images flagged (false positives)"),
    Metric("tn", MAXIMIZE, "images", "confusion count: good images passed (true negatives)"),
    Metric("macro_recall", MAXIMIZE, "", "mean of per-class recalls (multi-class)"),
    Metric("min_class_recall", MAXIMIZE, "", "worst per-class recall (multi-class)"),
    Metric("macro_f1", MAXIMIZE, "", "mean of per-class F1 (multi-class)"),
    # efficiency metrics
    Metric("latency_ms", MINIMIZE, "ms", "ms per image: median of block medians of ms per batch / batch size (headline at batch 1)"),
    Metric("latency_p50_ms", MINIMIZE, "ms", "p50 ms per batch"),
    Metric("latency_p90_ms", MINIMIZE, "ms", "p90 ms per batch"),
    Metric("latency_p95_ms", MINIMIZE, "ms", "p95 ms per batch"),
    Metric("latency_mean_ms", MINIMIZE, "ms", "mean ms per batch"),
    Metric("latency_std_ms", MINIMIZE, "ms", "standard deviation of ms per batch"),
    Metric("throughput_ips", MAXIMIZE, "img/s", "images per second at the batch size of the row"),
    Metric("size_mb", MINIMIZE, "MB", "bytes of the deployable artifact on disk / 1e6"),
    Metric("param_count", MINIMIZE, "", "number of parameters"),
    Metric("gmacs", MINIMIZE, "GMAC", "multiply-accumulates per image, in billions"),
    Metric("peak_rss_mb", MINIMIZE, "MB", "RSS high-water mark above the process baseline, fresh process"),
    Metric("cuda_peak_mb", MINIMIZE, "MB", "torch.cuda.max_memory_allocated, fresh process"),
    Metric("core_ms_per_image", MINIMIZE, "core-ms", "latency x threads: CPU time one image costs"),
    Metric("cost_per_1m", MINIMIZE, "$", "cost of one million images at --price-per-core-hour (CPU) or --price-per-gpu-hour (CUDA)"),
    Metric("achieved_gmacs_per_s", MAXIMIZE, "GMAC/s", "MACs per image x images per second"),
    Metric("speedup_vs_parent", MAXIMIZE, "x", "parent latency / this model's, same runtime, timed interleaved in one process (--vs-parent)"),
    Metric("roofline_fraction", MAXIMIZE, "", "achieved MAC/s over the host's measured peak for the precision"),
    Metric("contention_cores", MINIMIZE, "cores", "cores other processes (or VM steal) kept busy on average while the row was timed"),
    Metric("energy_mj_per_image", MINIMIZE, "mJ", "energy per image over the timed loop, idle power subtracted: RAPL/powercap package counters (CPU) or NVML (CUDA); only where the host exposes a counter"),
    Metric("energy_est_mj_per_image", MINIMIZE, "mJ", "ESTIMATE, not a measurement: --watts W x wall ms per image (only with --watts)"),
    # derived by the `tradeoff` view (never written by bench)
    Metric("peak_mb", MINIMIZE, "MB", "peak memory on the row's device: CUDA max allocated on cuda, RSS high-water mark on cpu"),
    Metric("latency_ms_p10", MINIMIZE, "ms", "p10 of the timed ms per image at batch 1: the low end of latency_ms's spread"),
    Metric("latency_ms_p90", MINIMIZE, "ms", "p90 of the timed ms per image at batch 1: the high end of latency_ms's spread"),
    Metric("speedup_vs_teacher", MAXIMIZE, "x", "latency of the root teacher in torch eager (same device and threads) / this latency"),
]

METRICS: dict[str, Metric] = {m.name: m for m in _METRICS}


class _Names:
    """`N.latency_ms == "latency_ms"`: code names a metric through this, never as a string literal,
    so a name exists in one place (the list above) and a typo fails at once instead of writing rows
    nobody reads."""

    def __init__(self, names: list[str]):
        self.__dict__.update({n: n for n in names})

    def __getattr__(self, name: str) -> str:
        raise AttributeError(f"no metric named '{name}' (metrics are defined in defectopt.metrics)")


N = _Names(list(METRICS))

# A timed row is flagged as measured under contention when other processes (or VM steal) kept
# more than this many cores busy on average during its timed phase: on a 2-core host a quarter
# core of competition is already ~10 % on a 2-thread model, and 2-3x when a neighbour trains.
CONTENTION_MAX_CORES = 0.25

# Metric families whose names carry a parameter after a colon, e.g. `recall_type:scratch`.
# bench writes one row per defect type (binary: the manifest's defect_type of each defect image;
# multi-class: each class); the row's `extra` holds {"type": ..., "n": images of that type}.
RECALL_TYPE_PREFIX = "recall_type:"
PATTERNS: dict[str, Metric] = {
    RECALL_TYPE_PREFIX: Metric("recall_type:<type>", MAXIMIZE, "", "recall on the test images of one defect type (one row per type)"),
}

# Short names users type (`--pareto recall latency`) -> stored metric names.
ALIASES = {
    "latency": "latency_ms",
    "throughput": "throughput_ips",
    "size": "size_mb",
    "memory": "peak_rss_mb",
    "cost": "cost_per_1m",
    "params": "param_count",
}


def resolve(name: str) -> Metric:
    from defectopt.errors import DefectoptError

    key = ALIASES.get(name, name)
    for prefix, metric in PATTERNS.items():
        if key.startswith(prefix) and len(key) > len(prefix):
            return metric
    if key not in METRICS:
        known = ", ".join(sorted(set(METRICS) | set(ALIASES) | {m.name for m in PATTERNS.values()}))
        raise DefectoptError(f"unknown metric '{name}'; known: {known}")
    return METRICS[key]


def all_metrics() -> list[Metric]:
    """Every metric, patterns included, in definition order (for `--help` texts)."""
    return [*_METRICS, *PATTERNS.values()]


def direction(name: str) -> str:
    return resolve(name).direction


def better(name: str, a: float, b: float) -> bool:
    """True when value a is strictly better than b for metric `name`."""
    return a > b if direction(name) == MAXIMIZE else a < b
