"""`defectopt doctor`: runtimes, ISA features, GPU, weights, store; what this machine can do."""

from __future__ import annotations

from defectopt.cli.app import DbOption, app, console
from defectopt.cli.output import FormatOption, check_format, emit
from defectopt.report.listing import Column, Listing, default_text


def _details(value, _row) -> str:
    return "; ".join(f"{k} {default_text(v)}" for k, v in value.items()) if value else ""


RUNTIME_COLUMNS = [
    Column("name", "runtime"), Column("version"), Column("status"),
    Column("details", "devices / providers", wrap=True, text=_details), Column("runs", wrap=True, optional=True),
]
ISA_COLUMNS = [Column("flag"), Column("present", "here"), Column("enables", wrap=True)]
CAPABILITY_COLUMNS = [Column("name", "this CPU", wrap=True), Column("available", "")]
GPU_COLUMNS = [Column("index", "gpu", numeric=True), Column("name"), Column("memory_gb", "memory GB", numeric=True),
               Column("capability", "compute capability")]
WEIGHTS_COLUMNS = [Column("name", "imported weights"), Column("timm_name", "timm name"), Column("source", wrap=True)]
FIELD_COLUMNS = [Column("field"), Column("value", wrap=True)]


@app.command("doctor")
def doctor_cmd(fmt: FormatOption = "table", db: DbOption = None):
    """What this machine can do: runtimes and their versions/devices, ISA features (VNNI, AVX512-BF16,
    AMX) and what they enable, GPUs, weights available offline, the store and its schema revision.
    Missing pieces are warnings; the exit code is 0."""
    from defectopt.doctor import diagnose

    fmt = check_format(fmt, ("table", "json"))
    report = diagnose(db)
    if fmt == "json":
        emit(console, fmt, [], document=report)
        return
    _print_report(report)


def _line(text: str, style: str | None = None) -> None:
    # soft_wrap: a line is never broken at the console width, so it greps as one line
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


def _section(listing: Listing) -> None:
    console.print()
    emit(console, "table", listing)


def _print_report(r: dict) -> None:
    host = r.get("host") or {}
    _line(f"defectopt {r['defectopt']}")
    if host:
        _line(f"host {host.get('hash')} (the fingerprint bench records): {host.get('cpu')}, {host.get('physical_cores')} "
              f"physical / {host.get('logical_cores')} logical cores, {host.get('ram_gb')} GB RAM, {host.get('os')}, "
              f"Python {host.get('python')}")
    runtimes = [{**x, "status": "ok" if x["available"] else "missing", "version": x["version"] or "-"} for x in r["runtimes"]]
    _section(Listing(RUNTIME_COLUMNS, runtimes, title="runtimes"))
    _section(Listing(ISA_COLUMNS, r["isa"]["flags"], title="ISA features (/proc/cpuinfo)"))
    _section(Listing(CAPABILITY_COLUMNS, r["isa"]["capabilities"], title="what they enable here"))
    console.print()
    if r["gpus"]:
        emit(console, "table", Listing(GPU_COLUMNS, r["gpus"], title="GPUs (torch.cuda)"))
    else:
        _line("GPUs: none visible to torch.cuda")
    weights = r["weights"]
    if weights["imported"]:
        _section(Listing(WEIGHTS_COLUMNS, weights["imported"], title=f"imported weights ({weights['root']})"))
    else:
        _line(f"imported weights: none in {weights['root']} (see 'defectopt weights import')")
    _line(f"timm hub cache: {', '.join(weights['hub_cached']) or 'no registry architecture cached'}")
    store, art = r["db"], r["artifacts"]
    counts = ", ".join(f"{k} {v}" for k, v in store.get("counts", {}).items())
    fields = [("database", store.get("path")), ("schema revision", f"{store.get('revision') or '-'} (head {store.get('head')}): {store.get('state')}"),
              ("rows", counts or "-"),
              ("artifacts", f"{art.get('path')}: {art.get('models', 0)} model folder(s), {art.get('bytes', 0) / 1e6:.1f} MB")]
    _section(Listing(FIELD_COLUMNS, [{"field": k, "value": v} for k, v in fields], title="results store",
                                   show_header=False))
    if r["warnings"]:
        console.print()
    for warning in r["warnings"]:
        _line(f"warning: {warning}", style="yellow")
