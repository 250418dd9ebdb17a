"""A model scored on the **val** split and timed, without touching the test split.

`search` steers by these figures; the frozen test split is read only by `bench` (the final
confirmation). Nothing here is written to the measurements table: val figures are not the
tradeoff table's figures, and the table's rows must all mean "measured on test".
"""

from __future__ import annotations

from dataclasses import dataclass

from defectopt.bench import runners as runners_mod
from defectopt.bench.evaluate import predict_split
from defectopt.bench.timing import DEFAULT, TimingConfig, time_runner
from defectopt.metrics import N
from defectopt.metrics.task import evaluate_logits
from defectopt.models.artifacts import load_artifact
from defectopt.store.db import Store


@dataclass(frozen=True)
class ValMeasurement:
    model_id: int
    backend: str
    precision: str
    recall: float  # macro recall (multi-class) or recall at the argmax decision (binary), on val
    min_class_recall: float | None
    val_defects: int  # images of defect classes in val: the resolution of `recall` is about 1 / this
    latency_ms: float  # median ms per image at `batch_size`
    latency_p10_ms: float
    latency_p90_ms: float
    batch_size: int
    size_mb: float
    contended: bool  # other processes took cores while this was timed (figure suspect)


def measure_on_val(store: Store, model_id: int, *, device: str = "cpu", backend: str = "openvino",
                   batch_size: int = 1, threads: int | None = None, timing: TimingConfig | None = None,
                   eval_batch_size: int = 32) -> ValMeasurement:
    from defectopt.bench.host import default_threads
    from defectopt.data.catalog import get_dataset

    artifact = load_artifact(store, model_id)
    dataset = get_dataset(store, artifact.dataset_id)
    runner = runners_mod.open_runner(artifact, device=device, backend=backend, threads=threads or default_threads())
    try:
        logits, labels = predict_split(runner, dataset, "val", eval_batch_size)
        values = evaluate_logits(logits, labels, dataset.task, dataset.num_classes)
        result = time_runner(runner, batch_size=batch_size, cfg=timing or DEFAULT)
        size = sum(p.stat().st_size for p in runner.payload_files()) / 1e6
        precision = runner.precision
    finally:
        runner.close()
    spread = result.spread()
    per_image = batch_size or 1
    # binary: label 1 is the defect; multi-class: every class is a defect type
    defects = int((labels == 1).sum()) if dataset.task == "binary" else len(labels)
    return ValMeasurement(
        model_id=model_id, backend=backend, precision=precision, recall=float(values[N.recall]),
        min_class_recall=values.get(N.min_class_recall), val_defects=defects,
        latency_ms=result.per_image_ms, latency_p10_ms=spread["p10_ms"] / per_image,
        latency_p90_ms=spread["p90_ms"] / per_image, batch_size=batch_size, size_mb=size,
        contended=bool(result.contention is not None and result.contention.contended),
    )


@dataclass(frozen=True)
class InterleavedTiming:
    """Models timed side by side in one process (bench.timing.compare_interleaved)."""

    names: list[str]  # "MODEL_ID:BACKEND", in the order given
    median_ms: dict[str, float]  # per image, median of block medians
    speedups: dict[tuple[str, str], dict[str, float]]  # (baseline, candidate) -> speedup, p10, p90, rounds
    contended: bool


def time_interleaved(store: Store, models: list[tuple[int, str]], *, device: str = "cpu", batch_size: int = 1,
                     threads: int | None = None, timing: TimingConfig | None = None) -> InterleavedTiming:
    """Time (model_id, backend) pairs interleaved in this process: the only fair way to rank
    candidates whose separate timings swing between runs (measured here: the same INT8 model at
    0.79 and 1.01 ms in two trials of one search)."""
    from defectopt.bench.host import default_threads
    from defectopt.bench.timing import compare_interleaved

    opened = {}
    try:
        for model_id, backend in models:
            name = f"{model_id}:{backend}"
            if name not in opened:
                opened[name] = runners_mod.open_runner(load_artifact(store, model_id), device=device, backend=backend,
                                                       threads=threads or default_threads())
        res = compare_interleaved(opened, batch_size=batch_size, cfg=timing or DEFAULT, device=device)
    finally:
        for runner in opened.values():
            runner.close()
    names = list(opened)
    contended = any(r.contention is not None and r.contention.contended for r in res.results.values())
    return InterleavedTiming(
        names=names, median_ms={n: res.results[n].per_image_ms for n in names},
        speedups={(a, b): res.speedup_spread(a, b) for a in names for b in names if a != b}, contended=contended)
