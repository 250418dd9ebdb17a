"""`defectopt report`: the study as one Markdown file with its plots (PNG) beside it.

Sections: the host fingerprint(s), then per dataset and device the tradeoff table with the
Pareto frontier (recall vs latency) marked, recall-vs-latency and recall-vs-size plots, the
`--min-recall` answer when asked, and the per-technique deltas against the parent with
McNemar's paired p-values.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from defectopt.errors import DefectoptError
from defectopt.metrics import CONTENTION_MAX_CORES, N
from defectopt.report import plots, table
from defectopt.report.pareto import pareto_mask, select_min_recall
from defectopt.store.db import Store

ALPHA = 0.05  # significance level used for the verdict words; the p-value is always shown

HOST_KEYS = ("cpu", "cpu_model", "physical_cores", "logical_cores", "cores", "isa", "flags", "gpu", "gpu_name",
             "torch", "onnxruntime", "openvino", "timm", "platform", "python", "hash", "host_hash")


@dataclass
class ReportResult:
    path: Path
    plots: list[Path] = field(default_factory=list)
    rows: int = 0


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-") or "x"


# The plots a report draws per dataset and device: (x, y).
REPORT_PLOTS = (("latency", N.recall), ("size", N.recall))


def plot_path(report: Path, dataset: str, device: str, y: str, x: str) -> Path:
    """Where the report at `report` puts its y-vs-x plot of one dataset on one device."""
    return report.with_name(f"{report.stem}-{_slug(dataset)}-{_slug(device)}-{y}-vs-{x}.png")


def plot_title(dataset: str, device: str, y: str, x: str) -> str:
    return f"{dataset} on {device}: {y} vs {x}"


def _host_section(hosts: list[dict]) -> list[str]:
    if not hosts:
        return ["_No host fingerprint recorded._", ""]
    lines = []
    for i, host in enumerate(hosts[:4], 1):
        lines.append(f"**Host {i}** (device `{host.get('device')}`)")
        lines.append("")
        lines.append("| key | value |")
        lines.append("|---|---|")
        keys = [k for k in HOST_KEYS if k in host] + sorted(k for k in host if k not in HOST_KEYS and k != "device")
        for k in keys:
            v = host[k]
            if isinstance(v, (list, tuple)):
                v = ", ".join(map(str, v))
            elif isinstance(v, dict):
                v = ", ".join(f"{a}={b}" for a, b in v.items())
            lines.append(f"| {k} | {str(v).replace('|', '/')} |")
        lines.append("")
    return lines


def parent_ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """Per child row: its parent's latency and size on the same device (same backend and
    dtype when the parent was run that way, else the parent in torch eager) over the child's.
    Where bench measured the ratio interleaved in one process (--vs-parent) that figure is used."""
    out = frame.copy()
    lat, size = [], []
    for _, row in frame.iterrows():
        par = frame[(frame["id"] == row["parent_id"]) & (frame["device"] == row["device"])]
        same = par[(par["backend"] == row["backend"]) & (par["threads"] == row["threads"])]
        ref = same if len(same) else par[(par["backend"] == "torch") & (par["threads"] == row["threads"])]
        if pd.notna(row.get(N.speedup_vs_parent)):
            lat.append(row[N.speedup_vs_parent])  # bench --vs-parent: timed interleaved, the trustworthy ratio
        elif len(ref) and pd.notna(row[N.latency_ms]) and pd.notna(ref.iloc[0][N.latency_ms]) and row[N.latency_ms]:
            lat.append(ref.iloc[0][N.latency_ms] / row[N.latency_ms])
        else:
            lat.append(None)
        if len(par) and pd.notna(row[N.size_mb]) and pd.notna(par.iloc[0][N.size_mb]) and row[N.size_mb]:
            size.append(par.iloc[0][N.size_mb] / row[N.size_mb])
        else:
            size.append(None)
    out["latency_ratio_vs_parent"] = pd.Series(lat, index=frame.index, dtype="float64")
    out["smaller_vs_parent"] = pd.Series(size, index=frame.index, dtype="float64")
    return out


def verdict(delta, p) -> str:
    if pd.isna(delta):
        return ""
    if pd.isna(p):
        return "no paired test (decisions not stored)"
    if p >= ALPHA:
        return "no significant change"
    return "significant loss" if delta < 0 else "significant gain"


def deltas_section(frame: pd.DataFrame) -> list[str]:
    children = parent_ratios(frame)
    children = children[children["parent_id"].notna()]
    if children.empty:
        return ["_No derived models (nothing with a parent) were benchmarked._", ""]
    lines = [
        "| technique | lineage | id ← parent | device/backend | recall | Δrecall vs parent | McNemar b/c | p | verdict | speedup vs parent | smaller vs parent |",
        "|---|---|---:|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for tech, group in children.groupby(children["technique"].fillna("?"), sort=True):
        for _, r in group.iterrows():
            bc = f"{r['mcnemar_b']}/{r['mcnemar_c']}" if pd.notna(r.get("mcnemar_b")) else ""
            p = table.format_p(r.get("p_vs_parent")).removeprefix("p=").removeprefix("p")
            lines.append(
                f"| {tech} | {r['lineage']} | {int(r['id'])} ← {int(r['parent_id'])} | {r['device']}/{r['backend']} "
                f"| {'' if pd.isna(r[N.recall]) else f'{r.recall:.3f}'} "
                f"| {'' if pd.isna(r['drecall_vs_parent']) else f'{r.drecall_vs_parent:+.3f}'} | {bc} | {p} "
                f"| {verdict(r['drecall_vs_parent'], r.get('p_vs_parent'))} "
                f"| {'' if pd.isna(r['latency_ratio_vs_parent']) else f'{r.latency_ratio_vs_parent:.2f}×'} "
                f"| {'' if pd.isna(r['smaller_vs_parent']) else f'{r.smaller_vs_parent:.2f}×'} |"
            )
    lines += ["", f"McNemar's paired test on the same test images (exact binomial below 25 discordant images, "
              f"else chi-square with continuity correction); verdicts at α = {ALPHA}. b = images the parent "
              "got right and the child missed, c = the reverse (binary tasks: defect images only).", ""]
    return lines


def missed_section(part: pd.DataFrame, missed: pd.DataFrame) -> list[str]:
    """One line per benchmarked row: test defects missed by type (counts of n)."""
    if missed.empty or part.empty:
        return ["_No per-type rows were recorded (re-run `defectopt bench --force` to add them)._", ""]
    keys = part[["id", "lineage", "device", "backend", "dtype"]].drop_duplicates(["id", "device", "backend", "dtype"])
    types = sorted(missed["type"].unique())
    lines = ["| id | lineage | backend/dtype | " + " | ".join(f"{t}" for t in types) + " | missed (total) |",
             "|---:|---|---|" + "---:|" * len(types) + "---:|"]
    for _, k in keys.iterrows():
        m = missed[(missed["id"] == k["id"]) & (missed["device"] == k["device"]) & (missed["backend"] == k["backend"])
                   & (missed["dtype"].fillna("") == ("" if pd.isna(k["dtype"]) else k["dtype"]))]
        if m.empty:
            continue
        by_type = {r["type"]: f"{int(r['missed'])}/{int(r['n'])}" for _, r in m.iterrows()}
        lines.append(f"| {int(k['id'])} | {k['lineage']} | {k['backend']}/{k['dtype']} | "
                     + " | ".join(by_type.get(t, "") for t in types)
                     + f" | {int(m['missed'].sum())}/{int(m['n'].sum())} |")
    lines += ["", "missed/n on the frozen test split at each row's operating point (binary: defects passed as good "
              "at the val-calibrated threshold; multi-class: images given another class).", ""]
    return lines


def contention_section(part: pd.DataFrame) -> list[str]:
    """Rows whose timing ran while other processes used the CPU: their speed figures are suspect."""
    if N.contention_cores not in part or part.empty:
        return []
    bad = part[part[N.contention_cores] > CONTENTION_MAX_CORES]
    if bad.empty:
        return []
    rows = ", ".join(f"{int(r['id'])} {r['backend']}/{r['dtype']} ({r[N.contention_cores]:.2f} cores)" for _, r in bad.iterrows())
    return [f"**Timed under contention** (other processes kept > {CONTENTION_MAX_CORES} cores busy during the timed "
            f"phase; their latency and throughput are suspect, re-measure with `bench --force` on a quiet machine): {rows}.", ""]


def build_report(store: Store, out: Path, *, device: str | None = None, dataset: str | None = None,
                 ids: list[int] | None = None, min_recall: float | None = None, by: str = "latency", title: str = "defectopt study") -> ReportResult:
    from defectopt.store.queries import host_fingerprints, missed_by_type

    out = Path(out)
    if out.suffix.lower() != ".md":
        raise DefectoptError(f"report output must be a .md file, got {out}")
    frame = table.load_table(store, device=device, dataset=dataset, ids=ids)
    result = ReportResult(path=out, rows=len(frame))
    lines = [f"# {title}", "",
             f"Generated {dt.datetime.now().isoformat(timespec='seconds')} from `{store.path}` "
             f"({len(frame)} benchmarked rows, {frame['id'].nunique() if len(frame) else 0} models).", ""]
    if frame.empty:
        lines += ["_Nothing has been benchmarked yet: run `defectopt bench`._", ""]
    lines += ["## Hosts", ""] + _host_section(host_fingerprints(store, frame["id"].tolist() if len(frame) else None))
    for (ds_name, dev), part in frame.groupby([frame["dataset"].fillna("?"), "device"], sort=True):
        part = part.assign(pareto=pareto_mask(part, N.recall, "latency"))
        lines += [f"## {ds_name} on {dev}", "", "### Tradeoff table", "",
                  "★ = on the recall-vs-latency Pareto frontier (nothing else is both at least as fast and at least as accurate).", "",
                  table.to_markdown(part, mark=True)]
        lines += contention_section(part)
        if min_recall is not None:
            try:
                choice = select_min_recall(part, min_recall, by=by)
                r = choice.row
                lines += [f"**Fastest model with recall CI lower bound ≥ {min_recall:g}** (by {choice.by}, "
                          f"{choice.qualified} qualified): model {int(r['id'])} `{r['lineage']}` on {r['backend']} — "
                          f"recall {r[N.recall]:.3f} [{r[N.recall_ci_low]:.3f}, {r[N.recall_ci_high]:.3f}], "
                          f"{r[N.latency_ms]:.3g} ms, {r[N.size_mb]:.3g} MB.", ""]
            except DefectoptError as exc:
                lines += [f"**Recall budget {min_recall:g}:** {exc}", ""]
        for x, y in REPORT_PLOTS:
            png = plot_path(out, ds_name, dev, y, x)
            try:
                plots.write_tradeoff_plot(part, x, y, png, title=plot_title(ds_name, dev, y, x))
            except DefectoptError as exc:
                lines += [f"_Plot {y} vs {x}: {exc}_", ""]
                continue
            result.plots.append(png)
            lines += [f"![{y} vs {x}, {ds_name} on {dev}]({png.name})", ""]
        lines += ["### Deltas per technique", ""] + deltas_section(part)
        lines += ["### Missed test defects by type", ""] + missed_section(part, missed_by_type(store, part["id"].unique().tolist()))
    lines += ["## Columns", "", "Every column comes from the `tradeoff` SQL view "
              "(`sqlite3 DB 'select * from tradeoff'`); speedups in this table are ratios of latencies "
              "measured in separate runs — `defectopt bench` measures head-to-head ratios interleaved in one run.", ""]
    table.write_atomic(out, "\n".join(lines))
    return result
