"""`defectopt bench`: task and efficiency measurements for models, stored as rows.

One *run* = one (model, device, backend); it gets a run_id and its whole measurement set is
written in ONE transaction at the end, so a crash or Ctrl-C never leaves half a set.

Row conventions (shared with the table/Pareto/report code):
  batch_size 0   task metrics on the frozen test split, and static rows (size_mb, param_count, gmacs)
  batch_size B   latency_* / throughput / cost / roofline rows timed at batch B; peak memory at batch 1
  every row      device, backend, precision, threads, run_id, host fingerprint JSON (with its hash)
Per-defect-type recall rows are named `recall_type:<type>` (defectopt.metrics.PATTERNS).

Already measured (model, device, backend, batch, threads) is skipped unless `force`; task and
static rows do not depend on threads and are skipped when present for (model, device, backend).
With `force` the new set replaces the old rows of the same key in the same transaction.

The decision threshold is chosen on the val split (highest threshold reaching the target
recall) with the engine being measured; the model's native runtime writes it to
models.threshold (the DB row; the immutable artifact is not touched).
"""

from __future__ import annotations

import math
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, delete, select

from defectopt.bench import runners as runners_mod
from defectopt.bench.evaluate import predict_split
from defectopt.bench.host import fingerprint
from defectopt.bench.options import BACKEND_CHOICES, BenchOptions
from defectopt.bench.roofline import host_peaks, peak_for_precision
from defectopt.bench.timing import compare_interleaved, time_runner
from defectopt.errors import DefectoptError
from defectopt.metrics import CONTENTION_MAX_CORES, N
from defectopt.metrics.task import choose_threshold, task_report
from defectopt.models.artifacts import Artifact, load_artifact
from defectopt.store.db import Store
from defectopt.store.schema import Measurement, Model, ModelStatus

# metrics written per timed batch size (replaced together under --force)
TIMED_METRICS = (N.latency_ms, N.latency_p50_ms, N.latency_p90_ms, N.latency_p95_ms, N.latency_mean_ms,
                 N.latency_std_ms, N.throughput_ips, N.core_ms_per_image, N.cost_per_1m, N.achieved_gmacs_per_s,
                 N.roofline_fraction, N.contention_cores, N.energy_mj_per_image, N.energy_est_mj_per_image)
MEMORY_METRICS = (N.peak_rss_mb, N.cuda_peak_mb)


@dataclass
class BenchOutcome:
    model_id: int
    backend: str
    status: str  # measured | skipped | failed
    message: str = ""
    run_id: str | None = None
    rows: int = 0
    seconds: float = 0.0
    headline: dict[str, Any] = field(default_factory=dict)
    bug: bool = False  # failed with an unexpected exception (not a DefectoptError)

    def line(self) -> str:
        if self.status == "failed":
            return f"model {self.model_id} [{self.backend}] failed: {self.message}"
        if self.status == "skipped":
            return f"model {self.model_id} [{self.backend}] skipped: {self.message}"
        return f"model {self.model_id} [{self.backend}] measured: {self.rows} rows in {self.seconds:.1f} s (run {self.run_id})"


# --- selection -------------------------------------------------------------------------------


def parse_ids(store: Store, text: str) -> list[int]:
    """'all' (every ready model) or a list like '1,3,7' / '2-5'."""
    text = (text or "all").strip().lower()
    if text == "all":
        with store.session() as s:
            return list(s.scalars(select(Model.id).where(Model.status == ModelStatus.READY).order_by(Model.id)))
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        if part.isdigit():
            ids.append(int(part))
        elif sep and lo.strip().isdigit() and hi.strip().isdigit() and int(lo) <= int(hi):
            ids.extend(range(int(lo), int(hi) + 1))
        else:
            raise DefectoptError(f"--ids takes 'all' or model IDs like 1,3,7 or 2-5; got '{text}'")
    return list(dict.fromkeys(ids))


def backends_to_run(artifact: Artifact, opts: BenchOptions) -> tuple[list[str], str]:
    """(backends, reason when empty) for one model."""
    available = runners_mod.available_backends(artifact, opts.device)
    if opts.backend == "auto":
        native = runners_mod.native_backend(artifact.format)
        if native is None:
            return [], f"format '{artifact.format}' has no runner"
        return [native], ""
    if opts.backend == "all":
        return available, "" if available else f"no backend runs format '{artifact.format}' on {opts.device}"
    if opts.backend in available:
        return [opts.backend], ""
    return [], f"format '{artifact.format}' does not run on {opts.backend}/{opts.device} (available: {', '.join(available) or 'none'})"


# --- what is already there ---------------------------------------------------------------------


@dataclass
class Needs:
    task: bool
    static: bool
    batches: list[int]
    memory: bool

    def any(self) -> bool:
        return self.task or self.static or bool(self.batches) or self.memory


def needs_for(store: Store, model_id: int, device: str, backend: str, threads: int, opts: BenchOptions) -> Needs:
    if opts.force:
        return Needs(True, True, list(opts.batch_sizes), opts.memory)
    key = and_(Measurement.model_id == model_id, Measurement.device == device, Measurement.backend == backend)
    with store.session() as s:
        rows = s.execute(select(Measurement.metric, Measurement.batch_size, Measurement.threads).where(key)).all()
    have_task = any(m == N.recall and b == 0 for m, b, _ in rows)
    have_static = any(m == N.size_mb and b == 0 for m, b, _ in rows)
    timed = {b for m, b, t in rows if m == N.latency_ms and t == threads}
    have_memory = any(m == N.peak_rss_mb and t == threads for m, _, t in rows)
    return Needs(not have_task, not have_static, [b for b in opts.batch_sizes if b not in timed],
                 opts.memory and not have_memory)


# --- pieces of one run ---------------------------------------------------------------------------


def model_macs(store: Store, artifact: Artifact, runner) -> tuple[float, str]:
    """MACs per image: the model itself when it has a torch form that FlopCounterMode can count,
    else its nearest torch ancestor (e.g. the FP32 parent of an INT8 export), else the
    architecture of its alias built on the meta device."""
    import torch

    from defectopt.models.artifacts import load_torch_model
    from defectopt.models.factory import count_macs, create

    if artifact.meta.get("macs"):
        return float(artifact.meta["macs"]), "artifact meta"
    module = getattr(runner, "model", None)
    if isinstance(module, torch.nn.Module) and artifact.meta.get("precision", "fp32") == "fp32":
        macs = count_macs(module, artifact.img_size, device=runner.device)
        if macs > 0:
            return macs, "flop_counter"
    cur: Artifact | None = artifact
    seen = set()
    while cur is not None and cur.id not in seen:
        seen.add(cur.id)
        if cur.meta.get("precision", "fp32") == "fp32":
            try:
                macs = count_macs(load_torch_model(cur), artifact.img_size)
                if macs > 0:
                    return macs, "flop_counter" if cur.id == artifact.id else f"flop_counter of parent {cur.id}"
            except DefectoptError:
                pass
        cur = load_artifact(store, cur.parent_id, verify=False) if cur.parent_id else None
    with torch.device("meta"):
        arch = create(artifact.alias, artifact.num_classes, artifact.img_size)
    return count_macs(arch, artifact.img_size, device="meta"), f"architecture of {artifact.alias}"


def model_params(store: Store, artifact: Artifact, runner) -> int | None:
    from defectopt.models.factory import param_count

    with store.session() as s:
        row = s.get(Model, artifact.id)
        if row.param_count:
            return int(row.param_count)
        parent = s.get(Model, row.parent_id) if row.parent_id else None
    module = getattr(runner, "model", None)
    if module is not None and hasattr(module, "parameters"):
        return param_count(module)
    if artifact.meta.get(N.param_count):
        return int(artifact.meta[N.param_count])
    return int(parent.param_count) if parent is not None and parent.param_count else None


class _Rows:
    """Collects the rows of one run; written together."""

    def __init__(self, model_id, run_id, device, backend, precision, threads, host, common_extra):
        self.items: list[Measurement] = []
        self._base = dict(model_id=model_id, run_id=run_id, device=device, backend=backend, precision=precision,
                          threads=threads, host=host)
        self._common = common_extra

    def add(self, metric: str, value, batch_size: int, extra: dict | None = None) -> None:
        if value is not None and isinstance(value, float) and not math.isfinite(value):
            value = None
        self.items.append(Measurement(**self._base, metric=metric, batch_size=batch_size,
                                      value=None if value is None else float(value),
                                      extra={**self._common, **(extra or {})}))


def _task_rows(rows: _Rows, store: Store, artifact: Artifact, runner, opts: BenchOptions) -> tuple[float | None, dict, str | None]:
    from defectopt.data.catalog import get_dataset

    dataset = get_dataset(store, artifact.dataset_id)
    test_records = dataset.split("test")
    if not test_records:
        raise DefectoptError(f"dataset {dataset.name} has an empty test split")
    threshold = None
    if dataset.task == "binary":
        val_logits, val_labels = predict_split(runner, dataset, "val", opts.eval_batch_size)
        threshold = choose_threshold(val_logits, val_labels, opts.target_recall)
    logits, labels = predict_split(runner, dataset, "test", opts.eval_batch_size)
    report = task_report(logits, labels, task=dataset.task, num_classes=dataset.num_classes,
                         test_types=[r["defect_type"] for r in test_records], class_names=dataset.class_names,
                         threshold=threshold, n_boot=opts.n_boot, seed=opts.seed)
    common = {"dataset": dataset.name, "split": "test", "split_hash": dataset.split_hash}
    for name, value in report.values.items():
        rows.add(name, value, 0, {**common, **report.extra.get(name, {})})
    return (threshold.threshold if threshold else None), report.values, (threshold.note() if threshold else None)


def _efficiency_rows(rows: _Rows, runner, batch: int, opts: BenchOptions, threads: int, macs: float | None,
                     peaks: dict[str, float], energy=None) -> dict[str, float]:
    result = time_runner(runner, batch_size=batch, cfg=opts.timing, energy=energy)
    summary = result.summary()
    per_batch = {"unit": "ms per batch", **summary}
    rows.add(N.latency_ms, result.per_image_ms, batch, {"unit": "ms per image", **summary})
    rows.add(N.latency_p50_ms, result.percentile(50), batch, per_batch)
    rows.add(N.latency_p90_ms, result.percentile(90), batch, per_batch)
    rows.add(N.latency_p95_ms, result.percentile(95), batch, per_batch)
    rows.add(N.latency_mean_ms, result.mean_ms, batch, per_batch)
    rows.add(N.latency_std_ms, result.std_ms, batch, per_batch)
    spread = result.spread()
    rows.add(N.throughput_ips, result.throughput_ips, batch,
             {"ips_low": batch * 1e3 / spread["p90_ms"], "ips_high": batch * 1e3 / spread["p10_ms"], **summary})
    if opts.device == "cpu":
        core_ms = result.per_image_ms * threads
        rows.add(N.core_ms_per_image, core_ms, batch, {"threads": threads, N.latency_ms: result.per_image_ms})
        rows.add(N.cost_per_1m, core_ms / 3.6e6 * opts.price_per_core_hour * 1e6, batch,
                 {"price_per_core_hour": opts.price_per_core_hour, N.core_ms_per_image: core_ms})
    else:
        rows.add(N.cost_per_1m, result.per_image_ms / 3.6e6 * opts.price_per_gpu_hour * 1e6, batch,
                 {"price_per_gpu_hour": opts.price_per_gpu_hour, N.latency_ms: result.per_image_ms})
    if result.contention is not None:
        rows.add(N.contention_cores, max(result.contention.other_cores, result.contention.steal_cores), batch,
                 result.contention.to_dict())
    if result.energy is not None:
        rows.add(N.energy_mj_per_image, result.energy.mj_per_image, batch, result.energy.to_dict())
    if opts.watts is not None:
        rows.add(N.energy_est_mj_per_image, opts.watts * result.per_image_ms, batch,
                 {"estimate": True, "watts": opts.watts, N.latency_ms: result.per_image_ms})
    out = {N.latency_ms: result.per_image_ms, N.throughput_ips: result.throughput_ips,
           "contention": result.contention}
    if macs:
        achieved = macs * result.throughput_ips
        rows.add(N.achieved_gmacs_per_s, achieved / 1e9, batch, {"macs_per_image": macs})
        peak = peak_for_precision(peaks, runner.precision)
        if peak is not None:
            rows.add(N.roofline_fraction, achieved / peak[1], batch,
                     {"peak_dtype": peak[0], "peak_gmacs_per_s": peak[1] / 1e9, N.achieved_gmacs_per_s: achieved / 1e9})
    return out


def _vs_parent_row(rows: _Rows, store: Store, artifact: Artifact, runner, backend: str, opts: BenchOptions,
                   threads: int) -> None:
    """Speedup over the parent in the same runtime, timed interleaved (A B A B) at batch 1."""
    if artifact.parent_id is None:
        return
    parent = load_artifact(store, artifact.parent_id)
    parent_runner = runners_mod.open_runner(parent, device=opts.device, backend=backend, threads=threads)
    if parent_runner.artifact.img_size != artifact.img_size:
        return
    res = compare_interleaved({"parent": parent_runner, "model": runner}, batch_size=1, cfg=opts.timing, device=opts.device)
    info = res.speedup_spread("parent", "model")
    rows.add(N.speedup_vs_parent, info["speedup"], 1, {"parent_id": parent.id, "parent_precision": parent_runner.precision,
                                                       **{k: v for k, v in info.items() if k != "speedup"},
                                                       "timings": res.to_dict()["results"]})


def saturating_grid_note(artifact: Artifact) -> str | None:
    """A static/QAT INT8 model whose weights use the full 8-bit grid, run on a CPU without VNNI/AMX:
    its INT8 kernels add u8 x s8 pairs into int16 and can saturate, so the recall measured here can
    be lower than where it was quantized (README_RESULTS 1.9: a QAT student 0.992 -> 0.942).
    Rows from before `--overflow-fix` carry no mode: NNCF's default (first layer only) for OpenVINO,
    the full grid for ONNX Runtime."""
    from defectopt.bench.host import cpu_has_int8_dot
    from defectopt.models.formats import FORMAT_OPENVINO

    quantize = artifact.meta.get("quantize") or {}
    if artifact.meta.get("precision") != "int8" or quantize.get("method") not in ("static", "qat"):
        return None
    grid = quantize.get("overflow_fix") or ("first_layer_only" if artifact.format == FORMAT_OPENVINO else "disable")
    if grid == "enable" or cpu_has_int8_dot():
        return None
    return (f"model {artifact.id}'s INT8 weights use the full 8-bit grid (overflow_fix {grid}) and this CPU has no "
            "VNNI/AMX, whose INT8 kernels can saturate on them: re-quantize for this CPU with --overflow-fix enable")


def bench_run(store: Store, artifact: Artifact, backend: str, opts: BenchOptions, host: dict, *,
              peaks_cache: dict, step: Callable[[str], None] = lambda _: None, energy=None) -> BenchOutcome:
    """Measure one (model, device, backend) and write its rows in one transaction."""
    t0 = time.perf_counter()
    threads = opts.resolved_threads()
    needs = needs_for(store, artifact.id, opts.device, backend, threads, opts)
    simulated = bool(artifact.meta.get("simulated"))
    if simulated:  # a bit width no runtime here executes: scored and sized, never timed as if it were fast
        needs.batches, needs.memory = [], False
    if not needs.any():
        return BenchOutcome(artifact.id, backend, "skipped", "already measured (use --force to re-measure)")
    run_id = uuid.uuid4().hex[:12]
    step(f"model {artifact.id} {artifact.alias} [{backend}]: opening runner")
    runner = runners_mod.open_runner(artifact, device=opts.device, backend=backend, threads=threads)
    try:
        common = {"format": artifact.format, "runner": {"settings": runner.settings, "derived_from": runner.derived_from}}
        rows = _Rows(artifact.id, run_id, opts.device, backend, runner.precision, threads, host, common)
        headline: dict[str, Any] = {"precision": runner.precision}
        notes: list[str] = []  # one-line warnings the user sees with the outcome
        threshold = None
        if needs.task:
            if artifact.dataset_id is None:
                headline["task"] = "no dataset: task metrics skipped"
            else:
                step(f"model {artifact.id} [{backend}]: val/test predictions")
                threshold, values, threshold_note = _task_rows(rows, store, artifact, runner, opts)
                headline.update(recall=values.get(N.recall), threshold=threshold)
                if threshold_note:
                    notes.append(threshold_note)
        grid_note = saturating_grid_note(artifact) if opts.device == "cpu" else None
        if grid_note:
            notes.append(grid_note)
        macs = None
        if needs.static or needs.batches:
            macs, macs_source = model_macs(store, artifact, runner)
        if needs.static:
            files = runner.payload_files()
            if simulated:
                size = int(artifact.meta["packed_bytes"])
                rows.add(N.size_mb, size / 1e6, 0, {"bytes": size, "packed": "computed from the bit widths",
                                                     "simulated": True})
            else:
                size = sum(p.stat().st_size for p in files)
                rows.add(N.size_mb, size / 1e6, 0, {"bytes": size, "files": [p.name for p in files]})
            params = model_params(store, artifact, runner)
            if params is not None:
                rows.add(N.param_count, params, 0)
            rows.add(N.gmacs, macs / 1e9, 0, {"source": macs_source, "img_size": artifact.img_size})
            headline[N.size_mb] = size / 1e6
        peaks: dict[str, float] = {}
        contended: list[str] = []
        if needs.batches and opts.roofline:
            key = (opts.device, threads)
            if key not in peaks_cache:
                step("measuring the host's peak GEMM rates (once per host)")
                peaks_cache[key] = host_peaks(store, host, opts.device, threads)
            peaks = peaks_cache[key]
        for b in needs.batches:
            step(f"model {artifact.id} [{backend}]: timing batch {b}")
            figures = _efficiency_rows(rows, runner, b, opts, threads, macs, peaks, energy)
            if b == 1:
                headline[N.latency_ms] = figures[N.latency_ms]
            headline[f"ips@{b}"] = figures[N.throughput_ips]
            if figures["contention"] is not None and figures["contention"].contended:
                contended.append(f"batch {b}: {figures['contention'].other_cores:.2f} cores by other processes, "
                                 f"{figures['contention'].steal_cores:.2f} stolen")
        if opts.vs_parent and 1 in needs.batches:
            step(f"model {artifact.id} [{backend}]: interleaved timing vs parent")
            _vs_parent_row(rows, store, artifact, runner, backend, opts, threads)
        if needs.memory:
            step(f"model {artifact.id} [{backend}]: peak memory (fresh process)")
            from defectopt.bench.memory import measure_memory

            mem = measure_memory(artifact, device=opts.device, backend=backend, threads=threads)
            info = {k: v for k, v in mem.items() if k not in (N.peak_rss_mb, N.cuda_peak_mb)}
            rows.add(N.peak_rss_mb, mem[N.peak_rss_mb], mem.get("batch_size", 1), info)
            if N.cuda_peak_mb in mem:
                rows.add(N.cuda_peak_mb, mem[N.cuda_peak_mb], mem.get("batch_size", 1), info)
            headline[N.peak_rss_mb] = mem[N.peak_rss_mb]
    finally:
        runner.close()
    native = runners_mod.native_backend(artifact.format) == backend
    _write(store, rows.items, artifact.id, opts, backend, threads, needs,
           threshold if (native and needs.task and artifact.dataset_id is not None) else _KEEP)
    if simulated:
        notes.append("simulated bit width: recall and packed size only, not timed")
    if contended:  # the rows are kept (they are flagged in `table`), but the user hears it now
        headline["contended"] = True
        notes.append(f"timed under contention ({'; '.join(contended)}; limit {CONTENTION_MAX_CORES} cores): "
                     "re-measure on a quiet machine with --force")
    return BenchOutcome(artifact.id, backend, "measured", "; ".join(notes), run_id, len(rows.items),
                        time.perf_counter() - t0, headline)


_KEEP = object()


def _write(store: Store, items: list[Measurement], model_id: int, opts: BenchOptions, backend: str, threads: int,
           needs: Needs, threshold) -> None:
    """The run's rows in one transaction (replacing the same keys when forced) + models.threshold."""
    with store.session() as s:
        if opts.force:
            key = and_(Measurement.model_id == model_id, Measurement.device == opts.device, Measurement.backend == backend)
            if needs.task or needs.static:
                s.execute(delete(Measurement).where(key, Measurement.batch_size == 0))
            if needs.batches:
                timed = TIMED_METRICS + ((N.speedup_vs_parent,) if opts.vs_parent else ())
                s.execute(delete(Measurement).where(key, Measurement.threads == threads, Measurement.metric.in_(timed),
                                                    Measurement.batch_size.in_(needs.batches)))
            if needs.memory:
                s.execute(delete(Measurement).where(key, Measurement.threads == threads,
                                                    Measurement.metric.in_(MEMORY_METRICS)))
        s.add_all(items)
        if threshold is not _KEEP:
            row = s.get(Model, model_id)
            row.threshold = threshold


def validate_options(opts: BenchOptions) -> None:
    """Every check of the options, before anything is read or written (also for an empty --ids)."""
    if opts.device not in ("cpu", "cuda"):
        raise DefectoptError(f"--device takes cpu or cuda, got '{opts.device}'")
    if opts.backend not in BACKEND_CHOICES:
        raise DefectoptError(f"--backend takes one of {', '.join(BACKEND_CHOICES)}, got '{opts.backend}'")
    if opts.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise DefectoptError("--device cuda requested but no CUDA device is available")
    if not 0.0 < opts.target_recall <= 1.0:
        raise DefectoptError(f"--target-recall must be in (0, 1], got {opts.target_recall}")
    if opts.min_iters is not None and opts.min_iters < 1:
        raise DefectoptError(f"--min-iters must be >= 1, got {opts.min_iters}")
    if opts.min_time is not None and opts.min_time <= 0:
        raise DefectoptError(f"--min-time must be > 0, got {opts.min_time}")
    if opts.bootstrap is not None and opts.bootstrap < 1:
        raise DefectoptError(f"--bootstrap must be >= 1, got {opts.bootstrap}")
    if not opts.batch_sizes or any(int(b) < 1 for b in opts.batch_sizes):
        raise DefectoptError(f"--batch-sizes takes positive integers like 1,16; got {list(opts.batch_sizes)}")
    if opts.threads is not None and opts.threads < 1:
        raise DefectoptError(f"--threads must be >= 1, got {opts.threads}")
    if opts.watts is not None and not opts.watts > 0:
        raise DefectoptError(f"--watts must be > 0, got {opts.watts}")


def energy_counter(opts: BenchOptions, on_note: Callable[[str], None]):
    """The host's energy counter for the device, or None (and one note saying why)."""
    if not opts.energy:
        return None
    from defectopt.bench.energy import counter_for

    counter = counter_for(opts.device)
    if counter.available:
        return counter
    on_note(f"energy per image not measured: {counter.reason}" + ("" if opts.watts else
            "; --watts W stores a labelled estimate instead"))
    return None


def run_bench(store: Store, opts: BenchOptions, *,
              on_start: Callable[[int], None] = lambda n: None,
              step: Callable[[str], None] = lambda _: None,
              on_outcome: Callable[[BenchOutcome], None] = lambda o: None,
              on_note: Callable[[str], None] = lambda _: None) -> list[BenchOutcome]:
    """Bench every model of `opts.ids`; a failing model is reported and the others continue."""
    validate_options(opts)
    ids = parse_ids(store, opts.ids)
    host = fingerprint()
    energy = energy_counter(opts, on_note) if ids else None
    peaks_cache: dict = {}
    outcomes: list[BenchOutcome] = []
    on_start(len(ids))
    for model_id in ids:
        t0 = time.perf_counter()
        try:
            artifact = load_artifact(store, model_id)
            backends, reason = backends_to_run(artifact, opts)
        except DefectoptError as exc:
            outcome = BenchOutcome(model_id, opts.backend, "failed", str(exc), seconds=time.perf_counter() - t0)
            outcomes.append(outcome)
            on_outcome(outcome)
            continue
        except Exception as exc:  # a bug: report it, keep going with the others
            outcome = BenchOutcome(model_id, opts.backend, "failed", _bug_line(exc), bug=True)
            outcomes.append(outcome)
            on_outcome(outcome)
            continue
        if not backends:
            outcome = BenchOutcome(model_id, opts.backend, "skipped", reason)
            outcomes.append(outcome)
            on_outcome(outcome)
        for backend in backends:
            try:
                outcome = bench_run(store, artifact, backend, opts, host, peaks_cache=peaks_cache, step=step,
                                    energy=energy)
            except DefectoptError as exc:
                outcome = BenchOutcome(model_id, backend, "failed", str(exc), seconds=time.perf_counter() - t0)
            except Exception as exc:
                outcome = BenchOutcome(model_id, backend, "failed", _bug_line(exc), seconds=time.perf_counter() - t0,
                                       bug=True)
            outcomes.append(outcome)
            on_outcome(outcome)
    return outcomes


def _bug_line(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" ({frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})" if frame else ""
    first = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"unexpected {type(exc).__name__}: {first}{where}"


def exit_code(outcomes: list[BenchOutcome]) -> int:
    """0: every model measured or skipped; 2: some failed for reasons a user can fix (missing or
    tampered artifact, unsupported backend...); 1: some failed with an unexpected error (a bug)."""
    failed = [o for o in outcomes if o.status == "failed"]
    if not failed:
        return 0
    return 1 if any(o.bug for o in failed) else 2
