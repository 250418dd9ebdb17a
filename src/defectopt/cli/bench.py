"""`defectopt bench`: measure task and efficiency metrics of models and store them as rows."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from defectopt.bench.options import BOOTSTRAP, QUICK_BOOTSTRAP, BenchOptions, parse_batch_sizes
from defectopt.cli.app import DbOption, QuietOption, app, console, err_console
from defectopt.cli.output import FormatOption, check_format, emit
from defectopt.metrics import N
from defectopt.report.listing import Column, Listing

D = BenchOptions()  # the defaults shown below are the entry point's own

SUMMARY_COLUMNS = [
    Column("id", numeric=True), Column("backend"), Column("precision"), Column("status"),
    Column(N.recall, numeric=True), Column("threshold", numeric=True, optional=True),
    Column(N.latency_ms, "latency ms (b1)", numeric=True), Column(N.throughput_ips, "img/s (largest b)", numeric=True),
    Column("throughput_batch", "at b", numeric=True, optional=True),
    Column(N.size_mb, "size MB", numeric=True), Column(N.peak_rss_mb, "peak RSS MB", numeric=True, optional=True),
    Column("run_id", machine_only=True), Column("rows", machine_only=True), Column("seconds", machine_only=True),
    Column("message", machine_only=True),
]


def _metrics_epilog() -> str:
    from defectopt.metrics import all_metrics

    # Rich help joins single newlines; a blank line keeps one metric per line.
    lines = [f"[bold]{m.name}[/] ({m.unit or '-'}, {'higher' if m.direction == 'max' else 'lower'} is better): {m.help}"
             for m in all_metrics()]
    return "Metrics written as rows:\n\n" + "\n\n".join(lines) + (
        "\n\nExit code: 0 all measured or skipped; 2 some model failed for a reason you can fix "
        "(missing/tampered artifact, unsupported backend); 1 some model hit an unexpected error.")


@app.command("bench", epilog=_metrics_epilog())
def bench_cmd(
    ids: Annotated[str, typer.Option("--ids", help="Models to bench: 'all' (every ready model) or IDs like 1,3,7 or 2-5.")] = D.ids,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = D.device,
    backend: Annotated[str, typer.Option("--backend", help="auto (each model's own runtime) | torch | onnxruntime | openvino | tensorrt | all. FP32 torch models are exported on demand (cached) to run in ONNX Runtime/OpenVINO/TensorRT.")] = D.backend,
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="Batch sizes to time: latency at 1, throughput at the larger ones.")] = ",".join(map(str, D.batch_sizes)),
    threads: Annotated[Optional[int], typer.Option("--threads", help="Inference threads, fixed and recorded.", show_default="physical cores")] = D.threads,
    target_recall: Annotated[float, typer.Option("--target-recall", help="Recall the decision threshold must reach on the val split (binary tasks).")] = D.target_recall,
    force: Annotated[bool, typer.Option("--force", help="Re-measure (model, device, backend, batch, threads) already in the DB, replacing those rows.")] = D.force,
    quick: Annotated[bool, typer.Option("--quick", help=f"Short timing budgets and {QUICK_BOOTSTRAP} bootstrap resamples (smoke tests; figures are noisier).")] = D.quick,
    min_iters: Annotated[Optional[int], typer.Option("--min-iters", help="Timed iterations at batch 1 (at batch B: the same number of images).", show_default="30; 6 with --quick")] = D.min_iters,
    min_time: Annotated[Optional[float], typer.Option("--min-time", help="Timed seconds per batch size, spread over the timing blocks.", show_default="2; 0.05 with --quick")] = D.min_time,
    memory: Annotated[bool, typer.Option("--memory/--no-memory", help="Measure peak memory in a fresh process per model.")] = D.memory,
    roofline: Annotated[bool, typer.Option("--roofline/--no-roofline", help="Report MAC/s as a fraction of the host's measured GEMM peak.")] = D.roofline,
    energy: Annotated[bool, typer.Option("--energy/--no-energy", help="Energy per image over the timed loop, idle power subtracted, where the host exposes a counter (RAPL/powercap on CPU, NVML on CUDA); says once why when it does not.")] = D.energy,
    watts: Annotated[Optional[float], typer.Option("--watts", help="Also store a labelled ESTIMATE energy_est_mj_per_image = W x wall ms per image (for hosts without a counter).", show_default=False)] = D.watts,
    vs_parent: Annotated[bool, typer.Option("--vs-parent", help="Also time each model against its parent in the same runtime, interleaved, and store speedup_vs_parent.")] = D.vs_parent,
    bootstrap: Annotated[Optional[int], typer.Option("--bootstrap", help="Bootstrap resamples for the 95% CI of macro recall (binary recall uses the exact Clopper-Pearson interval).", show_default=f"{BOOTSTRAP}; {QUICK_BOOTSTRAP} with --quick")] = D.bootstrap,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = D.seed,
    price_per_core_hour: Annotated[float, typer.Option("--price-per-core-hour", help="USD per CPU core-hour, for cost_per_1m on CPU.")] = D.price_per_core_hour,
    price_per_gpu_hour: Annotated[float, typer.Option("--price-per-gpu-hour", help="USD per GPU-hour, for cost_per_1m on CUDA.")] = D.price_per_gpu_hour,
    fmt: FormatOption = "table",
    db: DbOption = None,
    quiet: QuietOption = False,
):
    """Measure task metrics (frozen test split) and latency, throughput, size, memory, cost and roofline
    fraction of models, on one device and backend; each result is a row in `measurements`.

    Example: defectopt bench --device cpu --ids all
    """
    from defectopt.bench import api
    from defectopt.store.db import open_store

    fmt = check_format(fmt)
    # md/csv/json summaries are for scripts: stdout then carries the summary alone, the log goes to stderr
    log = console if fmt == "table" else err_console
    opts = BenchOptions(
        ids=ids, device=device, backend=backend, batch_sizes=parse_batch_sizes(batch_sizes), threads=threads,
        target_recall=target_recall, force=force, quick=quick, min_iters=min_iters, min_time=min_time,
        bootstrap=bootstrap, seed=seed, price_per_core_hour=price_per_core_hour,
        price_per_gpu_hour=price_per_gpu_hour, memory=memory, roofline=roofline, vs_parent=vs_parent,
        energy=energy, watts=watts,
    )
    api.validate_options(opts)
    store = open_store(db)
    outcomes = _run_with_progress(log, store, opts, quiet)
    if not outcomes:
        log.print("no ready models to bench (see 'defectopt ls')")
        if fmt != "table":
            emit(console, fmt, summary_listing([]))
        return
    if fmt != "table" or any(o.status == "measured" for o in outcomes):
        emit(console, fmt, summary_listing(outcomes))
    code = api.exit_code(outcomes)
    if code:
        from rich.markup import escape

        failed = [o for o in outcomes if o.status == "failed"]
        # name the (first) problem on the error line itself, not only in the log above
        first = f"model {failed[0].model_id}: {failed[0].message}" if failed else "see above"
        more = f" (and {len(failed) - 1} more; {len(failed)} of {len(outcomes)} bench runs failed)" if len(failed) > 1 else ""
        err_console.print(f"[bold red]error:[/] {escape(first)}{more}", soft_wrap=True)
        raise typer.Exit(code)


def _print_outcome(target, o) -> None:
    style = {"failed": "red", "skipped": "yellow"}.get(o.status)
    target.print(o.line(), style=style, markup=False, highlight=False, soft_wrap=True)


def _run_with_progress(log, store, opts, quiet):
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from defectopt.bench import api

    def note(msg: str) -> None:
        log.print(f"[yellow]note:[/] {escape(msg)}", highlight=False, soft_wrap=True)

    if quiet or not log.is_terminal:
        return api.run_bench(store, opts, on_note=note,
                               step=lambda msg: None if quiet else log.print(msg, markup=False, highlight=False),
                               on_outcome=lambda o: _print_outcome(log, o))
    with Progress(TextColumn("[bold]bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=log, transient=False) as progress:
        task = progress.add_task("", total=None)
        done_models: set[int] = set()

        def on_outcome(o):
            _print_outcome(progress.console, o)
            if o.model_id not in done_models:
                done_models.add(o.model_id)
                progress.advance(task)

        return api.run_bench(store, opts, on_start=lambda n: progress.update(task, total=n), on_note=note,
                             step=lambda msg: progress.update(task, description=escape(msg)), on_outcome=on_outcome)


def summary_listing(outcomes) -> Listing:
    """This run's outcomes, one row per model and backend (failed and skipped ones too: their
    message says why)."""
    rows = []
    for o in outcomes:
        h = o.headline
        ips = [(int(k.removeprefix("ips@")), v) for k, v in h.items() if k.startswith("ips@")]
        rows.append({"id": o.model_id, "backend": o.backend, "precision": h.get("precision"), "status": o.status,
                     N.recall: h.get(N.recall), "threshold": h.get("threshold"), N.latency_ms: h.get(N.latency_ms),
                     N.throughput_ips: ips[-1][1] if ips else None, "throughput_batch": ips[-1][0] if ips else None,
                     N.size_mb: h.get(N.size_mb), N.peak_rss_mb: h.get(N.peak_rss_mb), "run_id": o.run_id,
                     "rows": o.rows, "seconds": o.seconds, "message": o.message})
    return Listing(SUMMARY_COLUMNS, rows, title="bench (this run)")
