"""Options of `bench` (the entry point `bench.api.run_bench`): every default in one place,
importable without torch (the CLI shows them, the pipeline builds them from TOML)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from defectopt.bench.timing import DEFAULT, QUICK, TimingConfig
from defectopt.errors import DefectoptError

BACKEND_CHOICES = ("auto", "torch", "onnxruntime", "openvino", "tensorrt", "litert", "all")
BOOTSTRAP = 1000  # resamples for the CI of macro recall
QUICK_BOOTSTRAP = 200


@dataclass(frozen=True)
class BenchOptions:
    ids: str = "all"  # 'all' (every ready model) or IDs like 1,3,7 or 2-5
    device: str = "cpu"
    backend: str = "auto"
    batch_sizes: tuple[int, ...] = (1, 16)
    threads: int | None = None  # None: physical cores
    target_recall: float = 0.99
    force: bool = False
    quick: bool = False  # short timing budgets and fewer bootstrap resamples (smoke runs)
    min_iters: int | None = None  # None: the timing config's own (30; 6 quick)
    min_time: float | None = None  # seconds per batch size; None: the timing config's own (2; 0.05 quick)
    bootstrap: int | None = None  # None: BOOTSTRAP, or QUICK_BOOTSTRAP with quick
    seed: int = 0
    price_per_core_hour: float = 0.05
    price_per_gpu_hour: float = 2.0
    memory: bool = True
    roofline: bool = True
    vs_parent: bool = False
    energy: bool = True  # energy per image where the host exposes a counter (RAPL/powercap, NVML)
    watts: float | None = None  # a labelled estimate instead: W x wall time per image
    eval_batch_size: int = 32

    def resolved_threads(self) -> int:
        from defectopt.bench.host import default_threads

        return self.threads or default_threads()

    @property
    def timing(self) -> TimingConfig:
        cfg = QUICK if self.quick else DEFAULT
        if self.min_iters is not None:
            cfg = replace(cfg, min_iters=self.min_iters)
        if self.min_time is not None:
            cfg = replace(cfg, min_seconds=self.min_time)
        return cfg

    @property
    def n_boot(self) -> int:
        if self.bootstrap is not None:
            return self.bootstrap
        return QUICK_BOOTSTRAP if self.quick else BOOTSTRAP


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(dict.fromkeys(int(x) for x in text.split(",") if x.strip()))
    except ValueError:
        raise DefectoptError(f"--batch-sizes takes positive integers like 1,16; got '{text}'") from None
    if not sizes or any(b < 1 for b in sizes):
        raise DefectoptError(f"--batch-sizes takes positive integers like 1,16; got '{text}'")
    return sizes
