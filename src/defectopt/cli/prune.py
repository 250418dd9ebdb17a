"""`defectopt prune --id ID --ratio R` (or `--ratios 0.2,0.4,0.6`): one pruned model per ratio."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from defectopt.cli.app import DbOption, QuietOption, SplitSeedOption, app, console
from defectopt.cli.output import emit
from defectopt.compress.prune.options import PruneOptions, parse_ratios, validate_ratio
from defectopt.report.listing import Column, Listing
from defectopt.metrics import N

D = PruneOptions()  # the defaults shown below are the entry point's own

SWEEP_COLUMNS = [
    Column("id", numeric=True), Column("ratio", numeric=True), Column("method"), Column(N.gmacs, "GMACs", numeric=True),
    Column("params_m", "params (M)", numeric=True), Column("macs_kept", "MACs kept", numeric=True),
    Column("val_recall", "val recall", numeric=True), Column("notes", wrap=True),
]


@app.command("prune")
def prune_cmd(
    model: Annotated[str, typer.Option("--id", help="Model to prune: an ID, or an alias meaning its latest ready model.")],
    ratio: Annotated[Optional[float], typer.Option("--ratio", help="Fraction of channels/heads to remove, 0 < R < 1.", show_default=False)] = None,
    ratios: Annotated[Optional[str], typer.Option("--ratios", help="Sweep: comma-separated ratios (0.2,0.4,0.6), one model each.", show_default=False)] = None,
    method: Annotated[str, typer.Option("--method", help="structured (Torch-Pruning: narrower, faster layers) or unstructured (magnitude zeros: smaller when compressed, not faster).")] = D.method,
    importance: Annotated[str, typer.Option("--importance", help="Channel score: l1, l2, taylor (gradients of a few train batches) or random (sanity baseline).")] = D.importance,
    global_pruning: Annotated[bool, typer.Option("--global/--uniform", help="Rank channels across all layers (global) or prune every layer by the same ratio (uniform).")] = D.global_pruning,
    iterative_steps: Annotated[int, typer.Option("--iterative-steps", help="Reach the ratio in K steps, re-scoring channels after each.")] = D.iterative_steps,
    round_to: Annotated[int, typer.Option("--round-to", help="Keep widths multiples of this (kernel-friendly); 1 = no rounding.")] = D.round_to,
    finetune_epochs: Annotated[int, typer.Option("--finetune-epochs", help="Recovery fine-tuning epochs on the train split (0 = none), selected on val recall.")] = D.finetune_epochs,
    kd_from: Annotated[Optional[str], typer.Option("--kd-from", help="Distill from this model (ID or alias) during recovery.", show_default=False)] = D.kd_from,
    alpha: Annotated[float, typer.Option("--alpha", help="KD weight in recovery (with --kd-from).")] = D.alpha,
    temperature: Annotated[float, typer.Option("--temperature", help="KD softmax temperature.")] = D.temperature,
    lr: Annotated[float, typer.Option("--lr", help="Recovery learning rate.")] = D.lr,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Recovery and calibration batch size.")] = D.batch_size,
    calib_batches: Annotated[int, typer.Option("--calib-batches", help="Train batches scored for taylor importance.")] = D.calib_batches,
    seed: Annotated[int, typer.Option("--seed")] = D.seed,
    device: Annotated[str, typer.Option("--device", help="Recovery device: auto, cpu or cuda (pruning itself runs on CPU).")] = D.device,
    amp: Annotated[str, typer.Option("--amp", help="Recovery mixed precision: none, bf16 or fp16.")] = D.amp,
    data: Annotated[Optional[str], typer.Option("--data", help="Dataset spec for recovery/taylor (default: the model's own dataset).", show_default=False)] = D.data,
    split_seed: SplitSeedOption = 0,
    quiet: QuietOption = False,
    db: DbOption = None,
):
    """Prune a model structurally (Torch-Pruning) or by magnitude; optional recovery fine-tuning with KD."""
    from defectopt.compress.prune.api import prune_models
    from defectopt.errors import DefectoptError
    from defectopt.store.db import open_store

    if (ratio is None) == (ratios is None):
        raise DefectoptError("give exactly one of --ratio R or --ratios R1,R2,...")
    wanted = [validate_ratio(ratio)] if ratio is not None else parse_ratios(ratios)
    opts = PruneOptions(
        model=model, ratios=tuple(wanted), method=method, importance=importance, global_pruning=global_pruning, iterative_steps=iterative_steps,
        round_to=round_to, finetune_epochs=finetune_epochs, kd_from=kd_from, alpha=alpha, temperature=temperature,
        lr=lr, batch_size=batch_size, calib_batches=calib_batches, seed=seed, device=device, amp=amp, data=data,
        split_seed=split_seed, quiet=quiet,
    )

    results = prune_models(open_store(db), opts, on_result=lambda r: console.print(r.line()))
    if len(results) > 1 or method == "unstructured":
        rows = []
        for r in results:
            notes = ""
            if "sparsity" in r.extra:
                notes = (f"{r.extra['sparsity']:.0%} zeros; {r.extra['dense_bytes'] / 1e6:.1f} MB dense, "
                         f"{r.extra['compressed_bytes'] / 1e6:.1f} MB zipped; no speedup (dense kernels)")
            elif r.extra.get("heads"):
                notes = f"heads/block {r.extra['heads'][0]}"
            rows.append({"id": r.model_id, "ratio": f"{r.ratio:g}", "method": r.method, N.gmacs: f"{r.macs_after / 1e9:.3f}",
                         "params_m": f"{r.params_after / 1e6:.2f}", "macs_kept": f"{r.macs_after / r.macs_before:.0%}",
                         "val_recall": f"{r.best_val[N.recall]:.3f}" if r.best_val else "", "notes": notes})
        emit(console, "table", Listing(SWEEP_COLUMNS, rows, title=f"pruned from model {results[0].parent_id}"))
