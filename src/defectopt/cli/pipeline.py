"""`defectopt pipeline [CONFIG.toml]`: the whole study from one config (see defectopt.pipeline)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from defectopt.cli.app import DbOption, QuietOption, app, console
from defectopt.metrics import N


@app.command("pipeline")
def pipeline_cmd(
    config: Annotated[Optional[str], typer.Argument(
        help="Study config (TOML), or a bundled one: neu-det, mvtec-ad, dagm. Default: the bundled synthetic study.",
        show_default=False)] = None,
    show_config: Annotated[bool, typer.Option("--show-config", help="Print the config (the bundled default if none given) and exit.")] = False,
    only: Annotated[Optional[list[str]], typer.Option(
        "--only", help="Run only these stages (comma list or repeated): teacher, references, students, prune, "
                       "quantize, bench, report. The others only find their finished steps.", show_default=False)] = None,
    skip: Annotated[Optional[list[str]], typer.Option(
        "--skip", help="Run every stage but these (same names as --only).", show_default=False)] = None,
    plan: Annotated[bool, typer.Option("--plan", help="Run nothing: list which steps are done and which are pending.")] = False,
    quiet: QuietOption = False,
    db: DbOption = None,
):
    """Run a whole study: teacher, students with and without KD, pruning, quantization, bench, then the
    Pareto table, plot and report. Steps whose models already exist are skipped, so re-running resumes.

    Example: defectopt pipeline            (built-in synthetic data, small settings, ~10 min on 2 cores)
             defectopt pipeline study-mvtec-screw --db screw.sqlite --skip references   (the rest, later)
    """
    from defectopt.errors import DefectoptError
    from defectopt.pipeline import bundled_config_text, load_config, run_pipeline, select_stages

    if show_config:
        from pathlib import Path

        if config is None or not Path(config).is_file():
            load_config(config)  # validates the name
            typer.echo(bundled_config_text(config or "default"), nl=False)
        else:
            typer.echo(Path(config).read_text(encoding="utf-8"), nl=False)
        return
    from defectopt.cli.report import print_tradeoff
    from defectopt.store.db import open_store

    if plan and (only is not None or skip is not None):
        raise DefectoptError("--plan runs no stage; leave out --only/--skip")
    stages = frozenset() if plan else select_stages(only, skip)
    cfg, origin = load_config(config)  # before opening the store: a bad config writes nothing
    if plan:
        from defectopt import paths

        db_path = paths.resolve_db_path(db)
        if not db_path.exists():  # a plan writes nothing, so it does not create the store either
            console.print(f"{db_path} does not exist: no step of '{cfg['study']['name']}' has run; every step is "
                          "pending, from the teacher on", highlight=False, markup=False)
            return
    result = run_pipeline(open_store(db), cfg, origin=origin, quiet=quiet, stages=stages,
                          echo=lambda t: console.print(t, markup=False, highlight=False))
    if result.frame is not None and len(result.frame):
        pareto = result.frame[result.frame["pareto"]]
        print_tradeoff(console, pareto, title=f"Pareto frontier ({result.dataset}): "
                                              "no other model is both faster and better at recall")
        min_recall, by = result.config["report"]["min_recall"], result.config["report"]["by"]
        if min_recall is not None:
            from defectopt.report.pareto import select_min_recall

            try:
                r = select_min_recall(result.frame, float(min_recall), by=by).row
                console.print(f"[bold green]answer:[/] the fastest model with recall CI lower bound ≥ {min_recall:g} "
                              f"(by {by}) is model {int(r['id'])} ({r['lineage']}) on {r['device']}/{r['backend']}: "
                              f"recall {r[N.recall]:.3f} [{r[N.recall_ci_low]:.3f}, {r[N.recall_ci_high]:.3f}], "
                              f"{r[N.latency_ms]:.3g} ms/image, {r[N.size_mb]:.3g} MB", highlight=False)
            except DefectoptError as exc:
                console.print(f"[yellow]recall budget {min_recall:g}:[/] {exc}", highlight=False)
    ran = sum(s.status == "ran" for s in result.steps)
    skipped = sum(s.status == "skipped" for s in result.steps)
    console.print(f"{ran} step(s) ran, {skipped} skipped (already done); {len(result.model_ids)} models in the study", highlight=False)
    if result.pending:
        # a pending step's children need its model ID, so they cannot be listed until it has run
        console.print(f"{len(result.pending)} step(s) pending, and the steps that build on them: "
                      + "; ".join(s.name for s in result.pending), highlight=False, markup=False)
    for name, path in result.outputs.items():
        console.print(f"  {name}: {path}", highlight=False, markup=False)
    if result.failed:
        console.print(f"[bold red]{len(result.failed)} step(s) had failures:[/] " + ", ".join(s.name for s in result.failed))
        raise typer.Exit(1)
