"""Output that survives pipes and 80 columns, --format on every listing, --version, doctor, completion."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from importlib import metadata

import pytest
from rich.console import Console

from conftest import make_ready_model
from fixtures.clihelp import assert_user_error, run_cli, run_cli_subprocess
from fixtures.handbuilt_study import add_model, build_study, measure

NARROW = {"COLUMNS": "80"}
QUICK_BENCH = ["--quick", "--batch-sizes", "1,2", "--threads", "1", "--no-memory", "--no-roofline"]

# The JSON keys README documents per listing command.
MODELS_KEYS = {"alias", "timm_name", "family", "role", "params", "gmacs", "weights"}
LS_KEYS = {"id", "alias", "lineage", "technique", "dataset", "img_size", "format", "size_bytes", "status", "parent_id", "chain"}
SHOW_KEYS = {"model", "epochs", "measurements"}
WEIGHTS_KEYS = {"name", "timm_name", "mapping", "normalization", "input_size", "sanity", "source", "source_sha256",
                "sha256", "path"}
BENCH_KEYS = {"id", "backend", "precision", "status", "recall", "threshold", "latency_ms", "throughput_ips",
              "throughput_batch", "size_mb", "peak_rss_mb", "run_id", "rows", "seconds", "message"}
TABLE_KEYS = {"id", "lineage", "technique", "device", "backend", "dtype", "recall", "recall_ci_low", "recall_ci_high",
              "latency_ms", "size_mb", "p_vs_parent"}
DOCTOR_KEYS = {"defectopt", "libraries", "host", "runtimes", "isa", "gpus", "weights", "db", "artifacts", "warnings"}


def assert_whole(text: str, *needles: str) -> None:
    """No cell cut to an ellipsis, and every listed string whole on one line."""
    assert "…" not in text, text
    lines = text.splitlines()
    for needle in needles:
        assert any(needle in line for line in lines), (needle, text)


@pytest.fixture
def long_study(store):
    """The hand-built study of test_report_table plus a model whose alias and lineage are long."""
    ids = build_study(store)
    with store.session() as s:
        lite = add_model(s, "efficientnet_lite4", "quantize-static", {"label": "int8-static-ort-fp2-keep-head"},
                         ids["int8"], fmt="openvino")
        measure(s, lite, {"recall": 0.8, "recall_ci_low": 0.5, "recall_ci_high": 1.0, "latency_ms": 0.5, "size_mb": 0.2},
                backend="openvino", precision="int8")
    ids["lite"] = lite
    return ids


def _ls_rows(store):
    from defectopt.models.catalog import list_models

    return list_models(store)


# --- pipes at 80 columns: nothing is cut ---------------------------------------------------------

def test_models_through_a_real_pipe_lists_every_alias_whole():
    """The reported bug: `defectopt models | grep efficientnet_b0` found nothing at 80 columns."""
    from defectopt.models.registry import REGISTRY

    res = run_cli_subprocess(["models"], env=NARROW)
    assert res.code == 0, res.stderr
    assert_whole(res.stdout, *REGISTRY, *(spec.timm_name for spec in REGISTRY.values()))
    assert any(line.startswith("efficientnet_b0 ") for line in res.stdout.splitlines())


def test_ls_show_and_table_at_80_columns_keep_ids_aliases_lineages_techniques(store, long_study):
    rows = _ls_rows(store)
    listed = run_cli(["ls"], env=NARROW)
    assert listed.code == 0, listed.stderr
    for r in rows:
        line = next(line for line in listed.stdout.splitlines() if re.match(rf"\s*{r['id']}\s", line))
        for cell in (r["alias"], r["lineage"], r["technique"]):
            assert cell in line, (cell, line)
    assert_whole(listed.stdout, "efficientnet_lite4", "quantize-static")

    lite = long_study["lite"]
    chain = "resnet18 → test_vit[KD α0.5] → prune0.3 → int8-static → int8-static-ort-fp2-keep-head"
    shown = run_cli(["show", str(lite)], env=NARROW)
    assert shown.code == 0, shown.stderr
    assert_whole(shown.stdout, chain, "efficientnet_lite4", "quantize-static", "openvino")

    table = run_cli(["table"], env=NARROW)
    assert table.code == 0, table.stderr
    assert_whole(table.stdout, chain, "resnet18 → test_vit[no-KD]", "quantize-static", "onnxruntime", "openvino")
    assert_whole(run_cli(["table", "--pareto", "recall", "latency", "--mark"], env=NARROW).stdout, chain, "★")


def test_weights_ls_at_80_columns_keeps_names_and_sources(db_path, tmp_path):
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = timm.create_model("test_efficientnet", num_classes=1000).state_dict()
    src = tmp_path / "plant-a-line-7-checkpoint-with-a-long-file-name.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(src))
    name = "plant-a-line-7-test-efficientnet-random-init"
    imported = run_cli(["weights", "import", str(src), "--model", "test_efficientnet", "--name", name, "--no-check"])
    assert imported.code == 0, imported.stderr
    listed = run_cli(["weights", "ls"], env=NARROW)
    assert listed.code == 0, listed.stderr
    assert_whole(listed.stdout, name, "test_efficientnet", str(src))
    (row,) = json.loads(run_cli(["weights", "ls", "--format", "json"]).stdout)
    assert set(row) == WEIGHTS_KEYS and row["name"] == name and len(row["source_sha256"]) == 64
    assert row["sanity"]["photos"] >= 1


def test_bench_summary_at_80_columns_and_as_json(store, synthetic):
    mid = make_ready_model(store, "test_resnet", synthetic)
    res = run_cli(["bench", "--ids", str(mid), *QUICK_BENCH, "-q", "--format", "json"], env=NARROW)
    assert res.code == 0, res.stderr
    (row,) = json.loads(res.stdout)  # stdout is the summary alone: the log went to stderr
    assert set(row) == BENCH_KEYS
    assert row["id"] == mid and row["backend"] == "torch" and row["precision"] == "fp32" and row["status"] == "measured"
    assert 0 <= row["recall"] <= 1 and row["latency_ms"] > 0 and row["throughput_batch"] == 2
    again = run_cli(["bench", "--ids", str(mid), *QUICK_BENCH, "-q", "--force"], env=NARROW)
    assert again.code == 0, again.stderr
    header = next(line for line in again.stdout.splitlines() if line.startswith("id "))
    for name in ("backend", "precision", "status", "latency ms (b1)", "img/s (largest b)"):
        assert name in header, header
    assert_whole(again.stdout, "torch", "fp32", "measured")


# --- --format: md, csv, json with stable keys ---------------------------------------------------

def test_every_listing_command_speaks_every_format(store, long_study):
    lite = long_study["lite"]
    for args, keys in ((["models"], MODELS_KEYS), (["ls"], LS_KEYS), (["table"], None)):
        as_json = run_cli([*args, "--format", "json"])
        assert as_json.code == 0, as_json.stderr
        records = json.loads(as_json.stdout)
        assert records and all(set(r) == keys if keys else set(r) >= TABLE_KEYS for r in records)
        as_csv = run_cli([*args, "--format", "csv"])
        header = next(csv.reader(io.StringIO(as_csv.stdout)))
        assert len(list(csv.DictReader(io.StringIO(as_csv.stdout)))) == len(records)
        assert set(header) == set(records[0])
        as_md = run_cli([*args, "--format", "md"]).stdout.splitlines()
        assert as_md[0].startswith("| ") and set(as_md[1]) <= set("|-:") and len(as_md) == len(records) + 2
    ls = {r["id"]: r for r in json.loads(run_cli(["ls", "--format", "json"]).stdout)}
    assert ls[lite]["parent_id"] == long_study["int8"] and ls[lite]["chain"].endswith("int8-static-ort-fp2-keep-head")
    assert ls[lite]["lineage"] == f"← {long_study['int8']} test_vit"

    shown = json.loads(run_cli(["show", str(long_study["kd"]), "--format", "json"]).stdout)
    assert set(shown) == SHOW_KEYS
    assert shown["model"]["id"] == long_study["kd"] and shown["model"]["lineage"] == "resnet18 → test_vit[KD α0.5]"
    assert shown["model"]["technique_params"] == {"alpha": 0.5}
    assert {m["metric"] for m in shown["measurements"]} >= {"recall", "latency_ms"}
    sections = run_cli(["show", str(long_study["kd"]), "--format", "csv"]).stdout
    assert "# measurements\ndevice,backend,precision,batch_size,threads,metric,value,created_at\n" in sections
    md = run_cli(["show", str(long_study["kd"]), "--format", "md"]).stdout
    assert "**measurements**" in md and "| device | backend |" in md


@pytest.mark.parametrize("args", [["models"], ["ls"], ["show", "1"], ["table"], ["weights", "ls"], ["bench"],
                                  ["doctor"]])
def test_an_unknown_format_is_one_line_and_exit_2(db_path, args):
    assert_user_error(run_cli([*args, "--format", "xml"]), "--format", "xml")


def test_table_keeps_rich_as_the_old_name_of_its_terminal_format(store, long_study):
    old, new = run_cli(["table", "--format", "rich"]), run_cli(["table", "--format", "table"])
    assert old.code == 0 and old.stdout == new.stdout


# --- terminals: fitted, never ellipsized ------------------------------------------------------------

def test_ls_on_an_80_column_terminal_drops_optional_columns_instead_of_cutting(store, long_study, monkeypatch):
    import defectopt.cli.models as models_cli

    buf = io.StringIO()
    monkeypatch.setattr(models_cli, "console", Console(file=buf, force_terminal=True, width=80, color_system=None))
    res = run_cli(["ls"])
    assert res.code == 0, res.stderr
    text = buf.getvalue()
    assert "┃" in text  # a Rich table, not the plain text of pipes
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "size MB" not in text  # an optional column went
    for r in _ls_rows(store):
        assert_whole(text, r["alias"], r["lineage"], r["technique"])


def test_a_table_too_wide_for_the_terminal_wraps_text_and_is_printed_wider_rather_than_cut():
    from defectopt.report.listing import Column, Listing, print_terminal

    listing = Listing([Column("id", numeric=True), Column("alias"), Column("lineage", wrap=True)],
                      [{"id": 123456789, "alias": "efficientnet_lite4_with_a_very_long_alias",
                        "lineage": "convnext_base → efficientnet_lite4[KD α0.5] → prune0.3 → int8-static"}])
    buf = io.StringIO()
    print_terminal(Console(file=buf, force_terminal=True, width=40, color_system=None), listing)
    text = buf.getvalue()
    assert_whole(text, "123456789", "efficientnet_lite4_with_a_very_long_alias")
    assert "efficientnet_lite4[KD" in text and "int8-static" in text  # wrapped at spaces, words whole
    buf = io.StringIO()
    print_terminal(Console(file=buf, force_terminal=True, width=140, color_system=None), listing)
    assert_whole(buf.getvalue(), "convnext_base → efficientnet_lite4[KD α0.5] → prune0.3 → int8-static")


# --- --version, completion --------------------------------------------------------------------------

def test_version_prints_the_package_version_and_with_v_the_libraries():
    import defectopt

    res = run_cli(["--version"])
    assert res.code == 0 and res.stdout == f"defectopt {defectopt.__version__}\n"
    assert defectopt.__version__ == metadata.version("defectopt")
    verbose = run_cli(["--version", "-v"])
    assert verbose.code == 0
    lines = verbose.stdout.splitlines()
    assert lines[0] == f"defectopt {defectopt.__version__}"
    for dist in ("torch", "timm", "torch-pruning", "onnxruntime", "openvino", "nncf", "typer", "rich", "sqlalchemy", "pandas"):
        assert f"{dist} {metadata.version(dist)}" in lines, dist


def test_shell_completion_is_offered_and_completes_commands():
    assert "--install-completion" in run_cli(["--help"]).stdout
    res = run_cli_subprocess([], env={"_DEFECTOPT_COMPLETE": "complete_bash", "COMP_WORDS": "defectopt doc", "COMP_CWORD": "1"})
    assert res.code == 0 and res.stdout.split() == ["doctor"], res.stdout + res.stderr


# --- doctor ---------------------------------------------------------------------------------------

def test_doctor_names_runtimes_with_versions_and_the_isa_flags(db_path):
    from defectopt.bench.host import fingerprint

    res = run_cli(["doctor"], env=NARROW)
    assert res.code == 0, res.stderr
    assert_whole(res.stdout)
    for runtime in ("openvino", "onnxruntime", "torch"):
        assert re.search(rf"^{runtime}\s+{re.escape(metadata.version(runtime))}\s+ok\b", res.stdout, re.M), runtime
    for flag in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16"):
        assert re.search(rf"^{flag}\s+(yes|no)\s+\S", res.stdout, re.M), flag
    assert "BF16 float math for INT8 models" in res.stdout and fingerprint()["hash"] in res.stdout
    assert str(db_path) in res.stdout and not db_path.exists()  # reported, not created


def test_doctor_json_has_the_documented_keys_and_the_store_state(store, synthetic):
    from defectopt.bench.host import fingerprint
    from defectopt.store.db import head_revision

    make_ready_model(store, "test_resnet", synthetic)
    res = run_cli(["doctor", "--format", "json"])
    assert res.code == 0, res.stderr
    report = json.loads(res.stdout)
    assert set(report) == DOCTOR_KEYS
    assert report["host"] == fingerprint()
    runtimes = {r["name"]: r for r in report["runtimes"]}
    assert runtimes["openvino"]["available"] and "CPU" in runtimes["openvino"]["details"]["devices"]
    assert "CPUExecutionProvider" in runtimes["onnxruntime"]["details"]["providers"]
    assert {f["flag"] for f in report["isa"]["flags"]} >= {"avx512_vnni", "avx512_bf16", "amx_tile"}
    db = report["db"]
    assert db["revision"] == db["head"] == head_revision() and db["state"] == "up to date"
    assert db["counts"]["models"] == 1 and db["counts"]["datasets"] == 1
    assert report["artifacts"]["models"] == 1 and report["artifacts"]["bytes"] > 0


def test_doctor_reports_an_unimportable_runtime_missing_and_exits_0(db_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    res = run_cli(["doctor"], env=NARROW)
    assert res.code == 0 and "Traceback" not in res.stdout + res.stderr
    assert re.search(r"^openvino\s+-\s+missing", res.stdout, re.M), res.stdout
    assert re.search(r"^onnxruntime\s+-\s+missing", res.stdout, re.M), res.stdout
    assert "warning: runtime openvino missing" in res.stdout
    report = json.loads(run_cli(["doctor", "--format", "json"]).stdout)
    runtimes = {r["name"]: r for r in report["runtimes"]}
    assert not runtimes["openvino"]["available"] and runtimes["openvino"]["version"] is None
    assert "openvino" in runtimes["openvino"]["error"] and runtimes["torch"]["available"]
