"""Redraw a committed study's tradeoff plots from its `tradeoff.csv`, after its DB is gone.

`defectopt report --db DB` draws `report-<dataset>-<device>-recall-vs-{latency,size}.png` from the
`tradeoff` view; `dump_study.py` commits that view as `tradeoff.csv`. The plots of the study DBs
of sessions 24-31 were drawn before the plot learned to keep labels apart (every point labelled:
unreadable where most models sit near recall 1.0), and those DBs do not exist any more. This feeds
the committed rows through the same plotting function the report uses, one figure per dataset
and device, so the redrawn plot shows exactly the rows the report plotted.

    python benchmarks/replot_study.py benchmarks/results/study-neu-det
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from defectopt.errors import DefectoptError
from defectopt.report.markdown import REPORT_PLOTS, plot_path, plot_title
from defectopt.report.plots import write_tradeoff_plot


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a study results folder holding tradeoff.csv")
    args = ap.parse_args(argv)
    csv_path = args.folder / "tradeoff.csv"
    if not csv_path.is_file():
        print(f"error: {csv_path} not found (write it with benchmarks/dump_study.py)", file=sys.stderr)
        return 2
    frame = pd.read_csv(csv_path)
    for (dataset, device), part in frame.groupby([frame["dataset"].fillna("?"), "device"], sort=True):
        for x, y in REPORT_PLOTS:
            out = plot_path(args.folder / "report.md", dataset, device, y, x)
            try:
                write_tradeoff_plot(part, x, y, out, title=plot_title(dataset, device, y, x))
            except DefectoptError as exc:
                print(f"{out.name}: {exc}", file=sys.stderr)
                continue
            print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
