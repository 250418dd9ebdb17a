"""`defectopt quantize --id ID --method dynamic|static|bf16|fp16|qat|auto [--backend B] ...`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from defectopt.cli.app import DbOption, QuietOption, app, console
from defectopt.cli.output import emit
from defectopt.compress.quantize.options import QATConfig, QuantizeOptions
from defectopt.report.listing import Column, Listing

D, Q = QuantizeOptions(), QATConfig()  # the defaults shown below are the entry point's own

_HELP_METHOD = ("dynamic (torch INT8 Linear), static (INT8 with calibration), bf16, fp16 (CUDA only), "
                "qat (fake-quant fine-tuning -> INT8), auto (PTQ -> mixed precision -> QAT within --max-recall-drop), "
                "weights-int4 / weights-int8 (NNCF weight-only compression of the OpenVINO IR, float activations)")
_HELP_BACKEND = ("static: openvino (NNCF, default, fastest here) | onnxruntime (QDQ); bf16: openvino | torch; "
                 "dynamic/fp16: torch; pt2e/fx are explained when asked for")


@app.command("quantize")
def quantize_cmd(
    model_id: Annotated[str, typer.Option("--id", help="ID (or alias: its latest ready model) of the FP32 model to quantize.")],
    method: Annotated[str, typer.Option("--method", help=_HELP_METHOD)],
    backend: Annotated[str, typer.Option("--backend", help=_HELP_BACKEND)] = D.backend,
    calib_images: Annotated[int, typer.Option("--calib-images", help="Train-split images to calibrate activation ranges on.")] = D.calib_images,
    sensitivity: Annotated[bool, typer.Option("--sensitivity", help="Quantize one layer group at a time, rank by val recall drop and logit error, store the table.")] = D.sensitivity,
    keep_fp: Annotated[Optional[str], typer.Option("--keep-fp", help="Leave layers in float: N (the N most sensitive; needs --sensitivity) or NAME,... (e.g. blocks.0,head).")] = D.keep_fp,
    max_recall_drop: Annotated[float, typer.Option("--max-recall-drop", help="auto: the val defect-recall drop allowed versus the parent.")] = D.max_recall_drop,
    max_keep_fp: Annotated[int, typer.Option("--max-keep-fp", help="auto: at most this many layer groups kept in float.")] = D.max_keep_fp,
    auto_evidence: Annotated[str, typer.Option("--auto-evidence", help="auto: how an attempt must show it is within --max-recall-drop on val: point (its net drop) | new-misses (also the val images it newly misses, none offset by one it regains) | bound (also their 90% upper bound: strictest; needs a large val split).")] = D.auto_evidence,
    float_precision: Annotated[str, typer.Option("--float-precision", help="OpenVINO INT8: precision of the remaining float math: auto (bf16 on AVX512-BF16/AMX CPUs, else fp32) | fp32 | bf16; recorded.")] = D.float_precision,
    overflow_fix: Annotated[str, typer.Option("--overflow-fix", help="static/qat/auto INT8 weight grid (NNCF's overflow_fix; ONNX Runtime: enable = reduce_range): auto (enable on CPUs without VNNI/AMX, whose INT8 kernels saturate; else first_layer_only) | first_layer_only | enable (7-bit weights in every dense layer) | disable; quantize on, or for, the deployment CPU; recorded.")] = D.overflow_fix,
    device: Annotated[str, typer.Option("--device", help="cpu | cuda (fp16 needs cuda).")] = D.device,
    epochs: Annotated[int, typer.Option("--epochs", help="qat/auto: fine-tuning epochs with fake quantization.")] = Q.epochs,
    lr: Annotated[float, typer.Option("--lr", help="qat/auto: learning rate.")] = Q.lr,
    batch_size: Annotated[int, typer.Option("--batch-size", help="qat/auto: training batch size.")] = Q.batch_size,
    kd_from: Annotated[Optional[int], typer.Option("--kd-from", help="qat/auto: distil from this model ID (the parent or the teacher).")] = Q.kd_from,
    alpha: Annotated[float, typer.Option("--alpha", help="qat with --kd-from: weight of the KD term.")] = Q.alpha,
    bits: Annotated[int, typer.Option("--bits", help="qat: weight bit width. 8 = deployable INT8 (OpenVINO); 2-6 = simulated (accuracy and packed size only, never timed).")] = D.bits,
    group_size: Annotated[int, typer.Option("--group-size", help="weights-int4: weights per scale group.")] = D.group_size,
    int4_ratio: Annotated[float, typer.Option("--int4-ratio", help="weights-int4: fraction of compressible layers in INT4 (the rest INT8).")] = D.int4_ratio,
    all_layers: Annotated[bool, typer.Option("--all-layers", help="weights-int4/int8: also convolutions and the first/last layers.")] = D.all_layers,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the calibration sample and of QAT.")] = D.seed,
    quiet: QuietOption = False,
    db: DbOption = None,
):
    """Quantize a model: a new model row (parent = ID) whose artifact runs in the engine that executes it."""
    from defectopt.compress.quantize.api import quantize_model
    from defectopt.store.db import open_store

    store = open_store(db)
    opts = QuantizeOptions(
        model=model_id, method=method, backend=backend, calib_images=calib_images, keep_fp=keep_fp, sensitivity=sensitivity,
        max_recall_drop=max_recall_drop, max_keep_fp=max_keep_fp, auto_evidence=auto_evidence, device=device, float_precision=float_precision,
        overflow_fix=overflow_fix,
        qat=QATConfig(epochs=epochs, lr=lr, batch_size=batch_size, kd_from=kd_from, alpha=alpha, seed=seed, quiet=quiet),
        seed=seed, bits=bits, group_size=group_size, int4_ratio=int4_ratio, all_layers=all_layers,
    )

    def progress(i: int, n: int, group: str) -> None:
        if not quiet:
            console.print(f"[dim]sensitivity {i + 1}/{n}: {group}[/]", highlight=False)

    out = quantize_model(store, opts, log=lambda m: console.print(m, highlight=False), progress=progress)
    if out.sensitivity is not None:
        _print_sensitivity(out.sensitivity)
    _print_results(store, out)
    if out.speed:
        _print_speed(out.speed)
    for note in out.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)


def _print_sensitivity(rows) -> None:
    columns = [Column("rank", numeric=True), Column("layer"), Column("recall_drop", "val recall drop", numeric=True),
               Column("logit_error", "logit error (rel. RMS)", numeric=True), Column("margin_corr", "margin corr", numeric=True)]
    cells = [{"rank": r["rank"], "layer": r["layer"], "recall_drop": f"{r['recall_drop']:+.4f}",
              "logit_error": f"{r['logit_error']:.6f}", "margin_corr": f"{r['margin_corr']:.4f}"} for r in rows]
    emit(console, "table", Listing(columns, cells, title="quantization sensitivity (one layer group quantized at a time, val split)"))


def _print_results(store, out) -> None:
    from defectopt.models.artifacts import get_row

    parent = get_row(store, out.parent_id)
    base = out.results[0].fidelity["parent_val_recall"] if out.results else float("nan")
    columns = [Column("id", numeric=True), Column("label"), Column("backend"), Column("precision", "prec."),
               Column("val_recall", "val recall", numeric=True), Column("drop", numeric=True),
               Column("paired", "val new/regained", optional=True),
               Column("margin_corr", "margin corr", numeric=True, optional=True), Column("mb", "MB", numeric=True),
               Column("smaller", numeric=True, optional=True), Column("chosen", "")]
    rows = []
    for r in out.results:
        row = get_row(store, r.model_id)
        f = r.fidelity
        ratio = (parent.size_bytes or 0) / row.size_bytes if row.size_bytes else 0.0
        chosen = out.chosen is not None and out.chosen.model_id == r.model_id and len(out.results) > 1
        rows.append({"id": r.model_id, "label": r.label, "backend": f.get("backend", r.backend), "precision": f.get("precision", ""),
                     "val_recall": f"{f['val_recall']:.3f}", "drop": f"{f['recall_drop']:+.4f}",
                     "paired": f"{f['val_new_misses']}/{f.get('val_regained', 0)}" if "val_new_misses" in f else "",
                     "margin_corr": f"{f['margin_corr']:.4f}",
                     "mb": f"{(row.size_bytes or 0) / 1e6:.2f}", "smaller": f"{ratio:.1f}x", "chosen": "chosen" if chosen else ""})
    title = (f"quantized from model {out.parent_id} ({parent.alias}, {(parent.size_bytes or 0) / 1e6:.2f} MB, "
             f"val recall {base:.3f})")
    emit(console, "table", Listing(columns, rows, title=title))


def _print_speed(speed) -> None:
    rows = [{"model": key.removesuffix("_ms"), "ms": f"{value:.3f}"} for key, value in speed.items() if key.endswith("_ms")]
    emit(console, "table", Listing([Column("model"), Column("ms", "ms/image", numeric=True)], rows,
                                   title="speed cost of --keep-fp (batch 1, interleaved in one process, same runtime)"))
    console.print(f"full INT8 is {_times(speed['int8_speedup_vs_fp32'])} than FP32; mixed precision is "
                  f"{_times(speed['mixed_speedup_vs_fp32'])} than FP32 and {_times(1 / speed['mixed_cost_vs_int8'])} "
                  "than full INT8", highlight=False)


def _times(speedup: float) -> str:
    """'2.10x faster' or '1.30x slower': a slowdown is never shown as a speedup."""
    return f"{speedup:.2f}x faster" if speedup >= 1 else f"{1 / speedup:.2f}x slower"
