"""The `tradeoff` view and `defectopt table` on a hand-built study (rows inserted directly)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3

import pytest
from defectopt.store.schema import Measurement, Model
from fixtures.clihelp import assert_user_error, run_cli
from fixtures.handbuilt_study import HOST, add_model, build_study


@pytest.fixture
def study(store):
    return build_study(store)


def invoke(*args):
    return run_cli(list(args))


def test_view_columns_lineage_and_deltas(store, study, db_path):
    con = sqlite3.connect(db_path)
    con.row_factory = sqlite3.Row
    rows = {r["id"]: dict(r) for r in con.execute("select * from tradeoff")}
    from defectopt.store.queries import TRADEOFF_COLUMNS

    assert list(next(iter(rows.values())).keys()) == list(TRADEOFF_COLUMNS)
    int8 = rows[study["int8"]]
    assert int8["lineage"] == "resnet18 → test_vit[KD α0.5] → prune0.3 → int8-static"
    assert rows[study["nokd"]]["lineage"] == "resnet18 → test_vit[no-KD]"
    assert int8["teacher_id"] == study["teacher"]
    assert int8["latency_ms"] == pytest.approx(1.25)  # the newest run wins
    assert int8["speedup_vs_teacher"] == pytest.approx(40.0 / 1.25)
    assert int8["drecall_vs_teacher"] == pytest.approx(-0.2)
    assert int8["drecall_vs_parent"] == pytest.approx(-0.1)
    assert int8["dtype"] == "int8" and int8["backend"] == "onnxruntime"
    teacher = rows[study["teacher"]]
    assert teacher["batch"] == 16 and teacher["throughput_ips"] == 60.0  # best batch
    assert teacher["speedup_vs_teacher"] == pytest.approx(1.0)
    assert teacher["drecall_vs_parent"] is None
    assert teacher["peak_mb"] == 300.0
    assert (teacher["latency_ms_p10"], teacher["latency_ms_p90"]) == (38.5, 45.25)
    assert rows[study["kd"]]["latency_ms_p10"] is None  # no spread stored: NULL, not a guess


def test_migration_has_frozen_copy_of_current_view():
    import importlib.util

    from defectopt.store.db import migrations_dir
    from defectopt.store.queries import TRADEOFF_VIEW_SQL

    path = sorted((migrations_dir() / "versions").glob("0*_tradeoff_view_*.py"))[-1]  # the newest view revision
    spec = importlib.util.spec_from_file_location("newest_view", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    frozen = [v for k, v in vars(mod).items() if k.startswith("TRADEOFF_V")]
    assert frozen == [TRADEOFF_VIEW_SQL], path.name


def test_sql_lineage_labels_match_python_labels(store, study):
    from defectopt.models.catalog import lineage
    from defectopt.store.queries import tradeoff_frame

    frame = tradeoff_frame(store)
    with store.session() as s:
        for _, row in frame.iterrows():
            assert row["lineage"] == lineage(s, s.get(Model, int(row["id"])))


def test_mcnemar_p_value_of_child_vs_parent(store, study):
    from defectopt.report.table import load_table

    frame = load_table(store).set_index("id")
    nokd = frame.loc[study["nokd"]]  # teacher caught 10, no-KD 7: b=3, c=0 -> exact p = 2 * 1/8
    assert (nokd["mcnemar_b"], nokd["mcnemar_c"]) == (3, 0)
    assert nokd["p_vs_parent"] == pytest.approx(0.25)
    assert frame.loc[study["pruned"], "p_vs_parent"] == pytest.approx(1.0)  # identical decisions
    assert pd_isna(frame.loc[study["teacher"], "p_vs_parent"])


def pd_isna(v):
    import pandas as pd

    return pd.isna(v)


@pytest.mark.parametrize("fmt", ["md", "csv", "json", "rich"])
def test_table_every_format_to_file(study, tmp_path, fmt):
    out = tmp_path / f"t.{fmt}"
    res = invoke("table", "--format", fmt, "--out", str(out))
    assert res.code == 0, res.stderr + res.stdout
    text = out.read_text()
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == 5
        assert {r["lineage"] for r in rows} >= {"resnet18", "resnet18 → test_vit[KD α0.5] → prune0.3 → int8-static"}
        assert float(next(r for r in rows if int(r["id"]) == study["nokd"])["p_vs_parent"]) == pytest.approx(0.25)
    elif fmt == "json":
        rows = json.loads(text)
        assert len(rows) == 5
        int8 = next(r for r in rows if r["id"] == study["int8"])
        assert int8["speedup_vs_teacher"] == pytest.approx(32.0)
        assert int8["recall_ci_low"] == 0.5
    elif fmt == "md":
        lines = text.strip().splitlines()
        assert lines[0].startswith("| id | lineage |") and len(lines) == 2 + 5
        # latency and throughput come from different batch sizes; the headers say which
        assert "| best batch |" in lines[0] and "| latency ms (batch 1) [p10, p90] |" in lines[0]
        assert "0.800 [0.500, 1.000]" in text and "32.00×" in text and "-0.300 (p=0.250)" in text
        assert "| 40 [38.5, 45.2] |" in text  # the teacher's latency with its spread
        assert "| 5 |" in text  # a row without a stored spread shows the median alone
    else:
        assert "tradeoff" in text and "int8-static" in text
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporary behind


def test_table_pareto_keeps_frontier_and_marks(study):
    res = invoke("table", "--pareto", "recall", "latency", "--format", "json")
    assert res.code == 0, res.stderr + res.stdout
    ids = {r["id"] for r in json.loads(res.stdout)}
    # teacher (best recall), kd? dominated by pruned (same recall, faster), int8 (fastest)
    assert ids == {study["teacher"], study["pruned"], study["int8"]}
    res = invoke("table", "--pareto", "recall", "latency", "--mark", "--format", "json")
    rows = json.loads(res.stdout)
    assert len(rows) == 5 and sum(r["pareto"] for r in rows) == 3


def test_table_min_recall_answers_fastest_qualifying(study):
    res = invoke("table", "--min-recall", "0.55")
    assert res.code == 0, res.stderr + res.stdout
    # ci_low >= 0.55: teacher (40 ms), kd (5), pruned (3): the fastest is the pruned model, not the first
    assert f"answer: model {study['pruned']}" in " ".join((res.stdout + res.stderr).split())
    res = invoke("table", "--min-recall", "0.55", "--by", "size", "--format", "csv")
    assert f"answer: model {study['pruned']}" in " ".join((res.stdout + res.stderr).split())
    res = invoke("table", "--min-recall", "0.8")
    assert_user_error(res, "no model has a recall CI lower bound >= 0.8")


def test_table_filters_sort_and_errors(study):
    res = invoke("table", "--device", "cuda", "--format", "json")
    assert res.code == 0 and json.loads(res.stdout) == []
    res = invoke("table", "--sort", "latency", "--format", "json")
    ids = [r["id"] for r in json.loads(res.stdout)]
    assert ids[0] == study["int8"] and ids[-1] == study["teacher"]
    res = invoke("table", "--dataset", "synthetic-test", "--format", "json")
    assert len(json.loads(res.stdout)) == 5
    for bad in (["--dataset", "nope"], ["--format", "xml"], ["--pareto", "recall", "speed"], ["--mark"]):
        assert_user_error(invoke("table", *bad))


def test_sqlite_cli_can_select_the_view(study, db_path):
    import shutil
    import subprocess

    if shutil.which("sqlite3") is None:
        pytest.skip("no sqlite3 shell")
    out = subprocess.run(["sqlite3", str(db_path), "select id, lineage from tradeoff order by id"],
                         capture_output=True, text=True, check=True).stdout
    assert "resnet18 → test_vit[KD α0.5] → prune0.3 → int8-static" in out


def test_plot_and_report_write_files(study, tmp_path):
    png = tmp_path / "pareto.png"
    res = invoke("plot", "--x", "latency", "--y", "recall", "--out", str(png))
    assert res.code == 0, res.stderr + res.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = tmp_path / "report" / "study.md"
    res = invoke("report", "--out", str(md), "--min-recall", "0.55")
    assert res.code == 0, res.stderr + res.stdout
    text = md.read_text()
    assert "## Hosts" in text and "Test CPU" in text
    assert "### Deltas per technique" in text and "no significant change" in text
    assert f"model {study['pruned']}" in text
    pngs = sorted(p.name for p in md.parent.glob("*.png"))
    assert len(pngs) == 2 and all(name in text for name in pngs)
    assert_user_error(invoke("plot", "--out", str(tmp_path / "x.jpg")), ".png")


def test_untimed_task_rows_join_every_thread_count(store, study):
    """bench skips task rows already measured for (model, device, backend): a second run at
    another thread count writes timed rows only, and both table rows must carry the recall."""
    from defectopt.store.queries import tradeoff_frame

    with store.session() as s:
        s.add(Measurement(model_id=study["kd"], run_id="r3", device="cpu", backend="torch", precision="fp32",
                          batch_size=1, threads=1, metric="latency_ms", value=9.0, extra={}, host=HOST))
        teacher_only = add_model(s, "resnet18", "finetune", {}, dataset_id=None)
        s.add(Measurement(model_id=teacher_only, run_id="r4", device="cpu", backend="torch", precision="fp32",
                          batch_size=0, threads=2, metric="recall", value=0.5, extra={}, host=HOST))
    frame = tradeoff_frame(store)
    kd = frame[frame["id"] == study["kd"]].sort_values("threads")
    assert list(kd["threads"]) == [1, 2] and list(kd["latency_ms"]) == [9.0, 5.0]
    assert list(kd["recall"]) == [0.9, 0.9]
    # speedup vs teacher needs the teacher timed at the same thread count: none at 1 thread
    assert kd["speedup_vs_teacher"].isna().tolist() == [True, False]
    only = frame[frame["id"] == teacher_only].iloc[0]
    assert only["recall"] == 0.5 and only["latency_ms"] != only["latency_ms"]  # NaN: never timed


def test_report_counts_missed_defects_by_type_and_flags_contended_timings(store, study, tmp_path):
    from defectopt.store.queries import missed_by_type

    with store.session() as s:
        for metric, value, n in (("recall_type:scratch", 0.75, 4), ("recall_type:spot", 1.0, 6)):
            s.add(Measurement(model_id=study["kd"], run_id="r1", device="cpu", backend="torch", precision="fp32",
                              batch_size=0, threads=2, metric=metric, value=value, extra={"type": metric[12:], "n": n},
                              host=HOST))
        s.add(Measurement(model_id=study["int8"], run_id="r1", device="cpu", backend="onnxruntime", precision="int8",
                          batch_size=1, threads=2, metric="contention_cores", value=1.3, extra={}, host=HOST))
    missed = missed_by_type(store, [study["kd"]])
    assert dict(zip(missed["type"], missed["missed"])) == {"scratch": 1, "spot": 0}
    md = tmp_path / "r.md"
    res = invoke("report", "--out", str(md))
    assert res.code == 0, res.stderr + res.stdout
    text = md.read_text()
    assert "### Missed test defects by type" in text
    assert f"| {study['kd']} |" in text and "| 1/4 | 0/6 | 1/10 |" in text
    assert "Timed under contention" in text and f"{study['int8']} onnxruntime/int8 (1.30 cores)" in text
    assert f"{study['kd']} torch" not in text.split("Timed under contention")[1].split("\n")[0]


def test_readme_lists_every_view_column_as_documented():
    """README's column table is a copy of TRADEOFF_COLUMNS (the one place the meanings live)."""
    from pathlib import Path

    from defectopt.store.queries import TRADEOFF_COLUMNS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [k for k, v in TRADEOFF_COLUMNS.items() if f"| `{k}` | {v} |" not in readme]
    assert not missing, f"README's tradeoff column table lacks or misstates: {missing}"
