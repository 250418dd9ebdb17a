"""`defectopt table | plot | report`: the answer, read from the `tradeoff` SQL view."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from defectopt.cli.app import DbOption, app, console
from defectopt.cli.output import FormatOption, check_format
from defectopt.metrics import N

DeviceFilter = Annotated[Optional[str], typer.Option("--device", help="Only rows measured on this device (cpu, cuda).")]
DatasetFilter = Annotated[Optional[str], typer.Option("--dataset", help="Only models of this dataset (its name, see 'defectopt ls').")]


@app.command("table")
def table_cmd(
    pareto: Annotated[Optional[tuple[str, str]], typer.Option(
        "--pareto", help="Keep the non-dominated rows for two metrics, e.g. --pareto recall latency "
        "(directions come from the metric definitions).", show_default=False)] = None,
    mark: Annotated[bool, typer.Option("--mark", help="With --pareto: keep every row and mark the frontier (★).")] = False,
    device: DeviceFilter = None,
    dataset: DatasetFilter = None,
    min_recall: Annotated[Optional[float], typer.Option(
        "--min-recall", help="Answer: the fastest (or --by size) model whose recall 95% CI lower bound is >= X.")] = None,
    by: Annotated[str, typer.Option("--by", help="What --min-recall minimizes: latency | size.")] = "latency",
    sort: Annotated[Optional[str], typer.Option("--sort", help="Sort by a column or metric (best first), e.g. latency, recall, size_mb.")] = None,
    fmt: FormatOption = "table",
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the table to this file (atomically) instead of the terminal.")] = None,
    db: DbOption = None,
):
    """The accuracy-latency-size tradeoff table: one row per model x device x backend."""
    from defectopt.errors import DefectoptError
    from defectopt.report import table as tbl
    from defectopt.report.pareto import pareto_mask, select_min_recall
    from defectopt.store.db import open_store

    fmt = check_format(fmt)
    if mark and not pareto:
        raise DefectoptError("--mark needs --pareto A B")
    frame = tbl.load_table(open_store(db), device=device, dataset=dataset)
    frame = tbl.sort_table(frame, sort)
    # chosen over every row (not just the frontier): the budget question has its own answer
    choice = select_min_recall(frame, min_recall, by=by) if min_recall is not None else None
    if pareto:
        frame = frame.assign(pareto=pareto_mask(frame, *pareto))
        if not mark:
            frame = frame[frame["pareto"]]
    if out is not None:
        tbl.write_atomic(out, tbl.render(frame, fmt, mark=mark))
        console.print(f"wrote {len(frame)} rows to {out}")
    elif fmt == "table":
        title = "tradeoff" + (f" — Pareto frontier of {pareto[0]} vs {pareto[1]}" if pareto else "")
        if frame.empty:
            console.print("no benchmarked models match; run 'defectopt bench' (see 'defectopt ls')")
        else:
            print_tradeoff(console, frame, title=title, mark=mark, highlight_id=int(choice.row["id"]) if choice else None)
    else:
        typer.echo(tbl.render(frame, fmt, mark=mark), nl=False)
    if choice is not None:
        r = choice.row
        console.print(
            f"[bold green]answer:[/] model {int(r['id'])} ({r['lineage']}) on {r['device']}/{r['backend']} "
            f"{r['dtype'] or ''}: recall {r[N.recall]:.3f} [95% CI {r[N.recall_ci_low]:.3f}–{r[N.recall_ci_high]:.3f}], "
            f"{r[N.latency_ms]:.3g} ms/image, {r[N.size_mb]:.3g} MB — lowest {choice.by} of the {choice.qualified} "
            f"row(s) with recall CI lower bound ≥ {min_recall:g}",
            highlight=False,
        )


def print_tradeoff(console, frame, *, title: str, mark: bool = False, highlight_id: int | None = None) -> None:
    """The tradeoff rows as a terminal table (two-line cells), or plain aligned text off a terminal."""
    from defectopt.report import table as tbl
    from defectopt.report.listing import print_terminal

    if console.is_terminal:
        print_terminal(console, tbl.terminal_listing(frame, title=title, mark=mark, highlight_id=highlight_id))
    else:
        console.file.write(tbl.to_plain(frame, title=title, mark=mark))
        console.file.flush()


@app.command("plot")
def plot_cmd(
    x: Annotated[str, typer.Option("--x", help="Metric on the x axis (e.g. latency, size, throughput, cost).")] = "latency",
    y: Annotated[str, typer.Option("--y", help="Metric on the y axis (e.g. recall, f1).")] = N.recall,
    pareto: Annotated[bool, typer.Option("--pareto/--no-pareto", help="Draw the Pareto frontier line.")] = True,
    device: DeviceFilter = None,
    dataset: DatasetFilter = None,
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")] = Path("pareto.png"),
    db: DbOption = None,
):
    """Labelled scatter of two metrics with the Pareto frontier (log x when it spans > 10x)."""
    from defectopt.report.plots import write_tradeoff_plot
    from defectopt.report.table import load_table
    from defectopt.store.db import open_store

    frame = load_table(open_store(db), device=device, dataset=dataset)
    title = f"{y} vs {x}" + (f" on {device}" if device else "") + (f", {dataset}" if dataset else "")
    path = write_tradeoff_plot(frame, x, y, out, pareto=pareto, title=title)
    console.print(f"wrote {path}")


@app.command("report")
def report_cmd(
    out: Annotated[Path, typer.Option("--out", help="Markdown file to write; the plots (PNG) go beside it.")] = Path("report.md"),
    device: DeviceFilter = None,
    dataset: DatasetFilter = None,
    min_recall: Annotated[Optional[float], typer.Option("--min-recall", help="Also answer the recall-budget question per dataset and device.")] = None,
    by: Annotated[str, typer.Option("--by", help="What --min-recall minimizes: latency | size.")] = "latency",
    db: DbOption = None,
):
    """Markdown report: tradeoff tables, Pareto plots, per-technique deltas (McNemar), host fingerprint."""
    from defectopt.report.markdown import build_report
    from defectopt.store.db import open_store

    result = build_report(open_store(db), out, device=device, dataset=dataset, min_recall=min_recall, by=by)
    console.print(f"wrote {result.path} ({result.rows} rows) and {len(result.plots)} plot(s)")
