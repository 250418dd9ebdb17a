"""`defectopt search --teacher ID --min-recall X`: the fastest model that keeps recall, searched
on this machine (see defectopt.search.api)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from defectopt.cli.app import DbOption, QuietOption, SplitSeedOption, app, console
from defectopt.search.options import SearchOptions

D = SearchOptions()  # the defaults shown below are the entry point's own


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


class _LiveTrials:
    """A table of trials redrawn as they finish on a terminal; one line per trial elsewhere."""

    def __init__(self, floor: float, quiet: bool):
        self.floor, self.quiet = floor, quiet
        self.rows: dict[int, object] = {}
        self.live = None

    def __enter__(self):
        if console.is_terminal and not self.quiet:
            from rich.live import Live

            self.live = Live(self._table(), console=console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)

    def _best(self) -> float | None:
        feasible = [r.latency_ms for r in self.rows.values() if r.feasible and r.latency_ms is not None]
        return min(feasible) if feasible else None

    def _table(self):
        from rich.table import Table

        best = self._best()
        table = Table(title=f"trials (floor: val recall ≥ {self.floor:g}; best feasible so far: "
                            f"{_fmt(best, '.3g') or '—'} ms)", expand=False)
        for col in ("#", "state", "plan", "model", "val recall", "ms/image", "MB", "reused", "s", "note"):
            table.add_column(col, overflow="fold")
        for r in sorted(self.rows.values(), key=lambda r: r.number)[-25:]:
            mark = "" if r.feasible is None else (" ✓" if r.feasible else " ✗")
            table.add_row(str(r.number), r.state, r.plan, _fmt(r.model_id, "d"), _fmt(r.recall, ".3f") + mark,
                          _fmt(r.latency_ms, ".3g"), _fmt(r.size_mb, ".2f"), str(r.reused), _fmt(r.seconds, ".0f"),
                          r.note[:90])
        return table

    def update(self, record) -> None:
        self.rows[record.number] = record
        if self.live is not None:
            self.live.update(self._table())
        elif record.state != "running" and not self.quiet:
            best = self._best()
            console.print(
                f"trial {record.number} {record.state}: {record.plan}"
                + (f" → model {record.model_id}" if record.model_id is not None else "")
                + (f", val recall {record.recall:.3f}{' ✓' if record.feasible else ' ✗'}" if record.recall is not None else "")
                + (f", {record.latency_ms:.3g} ms/image" if record.latency_ms is not None else "")
                + (f" ({record.reused} step(s) reused)" if record.reused else "")
                + (f" — {record.note}" if record.note else "")
                + (f"; best feasible so far {best:.3g} ms" if best is not None else ""),
                markup=False, highlight=False, soft_wrap=True)


@app.command("search")
def search_cmd(
    teacher: Annotated[str, typer.Option("--teacher", help="The fine-tuned teacher (ID or alias): KD source; its dataset is searched.")],
    min_recall: Annotated[float, typer.Option("--min-recall", help="Recall floor: a constraint on val recall, then on the answer's test recall CI lower bound.")],
    data: Annotated[Optional[str], typer.Option("--data", help="Dataset spec (default: the teacher's dataset).", show_default=False)] = D.data,
    device: Annotated[str, typer.Option("--device", help="Where latency is measured: cpu or cuda.")] = D.device,
    trials: Annotated[Optional[int], typer.Option("--trials", help=f"Total finished trials of the search (a resumed search counts its earlier ones). Default {SearchOptions.DEFAULT_TRIALS} unless --time is given.", show_default=False)] = D.trials,
    time_budget: Annotated[Optional[str], typer.Option("--time", help="Wall-time budget of this run, e.g. 90m, 2h; no trial starts after it (a running one finishes).", show_default=False)] = None,
    space: Annotated[Optional[str], typer.Option("--space", help="TOML file overriding the search space ([space] students, img_sizes, alphas, prune_ratios, quantize, backends, keep_fp, epochs...).", show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Name of a new search (default: search-t<teacher>-r<floor>).", show_default=False)] = D.name,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue the search with this name (after a crash, Ctrl-C or to add trials).", show_default=False)] = None,
    objectives: Annotated[str, typer.Option("--objectives", help="recall,latency or recall,latency,size.")] = ",".join(D.objectives),
    sampler: Annotated[str, typer.Option("--sampler", help="tpe (multi-objective TPE; good for small budgets) or nsga2.")] = D.sampler,
    startup_trials: Annotated[int, typer.Option("--startup-trials", help="Random trials before TPE models the space (NSGA-II: population size).")] = D.startup_trials,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size of the latency objective.")] = D.batch_size,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads for timing (default: physical cores).", show_default=False)] = D.threads,
    min_iters: Annotated[int, typer.Option("--min-iters", help="Timed runs per trial latency.")] = D.min_iters,
    min_time: Annotated[float, typer.Option("--min-time", help="Seconds of timing per trial, at least.")] = D.min_time,
    early_stop: Annotated[bool, typer.Option("--early-stop/--no-early-stop", help="Stop a student whose val recall is further below the floor than any finished run ever recovered.")] = D.early_stop,
    early_stop_min_curves: Annotated[int, typer.Option("--early-stop-min-curves", help="Finished student runs needed before the early-stopping rule stops anything.")] = D.early_stop_min_curves,
    confirm: Annotated[bool, typer.Option("--confirm/--no-confirm", help="Measure the val Pareto set on the test split at the end (bench).")] = D.confirm,
    compare: Annotated[Optional[str], typer.Option("--compare", help="Models to time interleaved with the answer, e.g. a hand-built pick: 11 or 11:openvino,2:torch.", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Sampler and training seed.")] = D.seed,
    out: Annotated[Optional[str], typer.Option("--out", help="Folder for the Pareto plot (default reports/<name>).", show_default=False)] = D.out,
    split_seed: SplitSeedOption = 0,
    quiet: QuietOption = False,
    db: DbOption = None,
):
    """Search student × input size × KD × pruning × INT8 method × runtime for the fastest model that
    keeps val recall ≥ the floor, timing each trial on this machine; then confirm the val Pareto set
    on the frozen test split.

    Example: defectopt search --teacher 2 --min-recall 0.98 --time 2h
    """
    from defectopt.errors import DefectoptError
    from defectopt.search.api import run_search
    from defectopt.search.options import load_space, parse_duration
    from defectopt.store.db import open_store

    if name and resume:
        raise DefectoptError("give --name for a new search or --resume NAME to continue one, not both")
    opts = SearchOptions(
        teacher=teacher, min_recall=min_recall, data=data, split_seed=split_seed, device=device, trials=trials,
        time_budget=parse_duration(time_budget) if time_budget is not None else None, name=resume or name,
        resume=resume is not None, space=load_space(space),
        objectives=tuple(o.strip() for o in objectives.split(",") if o.strip()), sampler=sampler,
        startup_trials=startup_trials, batch_size=batch_size, threads=threads, min_iters=min_iters, min_time=min_time,
        early_stop=early_stop, early_stop_min_curves=early_stop_min_curves, confirm=confirm,
        compare=tuple(c.strip() for c in (compare or "").split(",") if c.strip()), seed=seed, out=out, quiet=quiet,
    )
    opts.validate()  # before the store is opened: bad options write nothing
    echo = lambda t: console.print(t, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    with _LiveTrials(min_recall, quiet) as live:
        outcome = run_search(open_store(db), opts, echo=echo, on_trial=live.update)
    done = [t for t in outcome.trials if t.state in ("complete", "pruned", "failed")]
    counts = {s: sum(t.state == s for t in done) for s in ("complete", "pruned", "failed")}
    secs = outcome.seconds
    console.print(f"search '{outcome.name}' ({outcome.storage}): {len(done)} trial(s) — {counts['complete']} complete, "
                  f"{counts['pruned']} stopped early, {counts['failed']} failed; {outcome.ran} run now in "
                  f"{secs['wall']:.0f} s (training {secs['train']:.0f} s, timing/val {secs['bench']:.0f} s, "
                  f"test confirmation {secs['confirm']:.0f} s, search overhead {secs['overhead']:.1f} s"
                  + (f" = {outcome.overhead_fraction:.1%}" if outcome.overhead_fraction is not None else "") + ")",
                  markup=False, highlight=False, soft_wrap=True)
    if outcome.confirmed:
        from rich.table import Table

        table = Table(title="val Pareto set (and --compare models), measured on the frozen test split")
        for col in ("trial", "model", "plan", "val recall", "val ms", "test recall [95% CI]", "bench ms", "interleaved ms", "MB"):
            table.add_column(col, overflow="fold")
        for c in outcome.confirmed + outcome.references:
            ci = (f"{c.test_recall:.3f} [{c.test_recall_ci_low:.3f}, {c.test_recall_ci_high:.3f}]"
                  if c.test_recall is not None and c.test_recall_ci_low is not None else _fmt(c.test_recall, ".3f"))
            table.add_row(str(c.trial) if c.trial >= 0 else "ref", str(c.model_id), c.plan, _fmt(c.val_recall, ".3f"),
                          _fmt(c.val_latency_ms, ".3g"), ci, _fmt(c.test_latency_ms, ".3g"), _fmt(c.interleaved_ms, ".3g"),
                          _fmt(c.size_mb, ".2f"))
        console.print(table)
    if outcome.answer_line:
        style = "bold green" if outcome.answer is not None else "yellow"
        from rich.markup import escape

        console.print(f"[{style}]answer:[/] {escape(outcome.answer_line)}", highlight=False)
    if outcome.plot is not None:
        console.print(f"Pareto plot: {outcome.plot}", markup=False, highlight=False)
    if outcome.trials_csv is not None:
        console.print(f"trials: {outcome.trials_csv}", markup=False, highlight=False)
