"""The `tradeoff` view and `defectopt table` on a hand-built study (rows inserted directly)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3

import pytest
from defectopt.store.schema import Dataset, Measurement, Model, ModelStatus, Technique
from fixtures.clihelp import assert_user_error, run_cli

LABELS = [1] * 10 + [0] * 10  # 20 test images, the first 10 are defects
HOST = {"cpu_model": "Test CPU", "physical_cores": 2, "torch": "2.x"}


def add_model(s, alias, technique, params, parent_id=None, dataset_id=None, fmt="torch"):
    tech = Technique(name=technique, params=params)
    s.add(tech)
    s.flush()
    row = Model(alias=alias, timm_name=alias, parent_id=parent_id, technique_id=tech.id, dataset_id=dataset_id,
                img_size=32, num_classes=2, status=ModelStatus.READY, artifact_path="x", artifact_format=fmt, config={})
    s.add(row)
    s.flush()
    return row.id


def measure(s, model_id, values, *, device="cpu", backend="torch", precision="fp32", threads=2, run="r1",
            decisions=None, throughput=None, latency_spread=None):
    """One bench run's rows with the documented conventions (task + static at batch 0, latency at 1)."""
    static = {"recall", "recall_ci_low", "recall_ci_high", "precision", "f1", "fnr", "size_mb", "param_count"}
    for metric, value in values.items():
        batch = 0 if metric in static else 1
        extra = {}
        if metric == "recall" and decisions is not None:
            extra = {"decisions": decisions, "labels": LABELS}
        if metric == "latency_ms" and latency_spread is not None:
            extra = {"p10_ms": latency_spread[0], "p90_ms": latency_spread[1]}
        s.add(Measurement(model_id=model_id, run_id=run, device=device, backend=backend, precision=precision,
                          batch_size=batch, threads=threads, metric=metric, value=value, extra=extra, host=HOST))
    for batch, ips in (throughput or {}).items():
        s.add(Measurement(model_id=model_id, run_id=run, device=device, backend=backend, precision=precision,
                          batch_size=batch, threads=threads, metric="throughput_ips", value=ips, extra={}, host=HOST))


def decisions_catching(n_defects_caught: int, skip: tuple[int, ...] = ()) -> list[int]:
    """Decisions flagging the first n defect images (except `skip`) and no good image."""
    caught = [1 if i < n_defects_caught and i not in skip else 0 for i in range(10)]
    return caught + [0] * 10


def build_study(store) -> dict[str, int]:
    """teacher → KD student → prune → int8 (ORT), plus a no-KD student; all benched on cpu."""
    with store.session() as s:
        ds = Dataset(name="synthetic-test", kind="synthetic", root="/nowhere", spec="synthetic:80",
                     class_names=["good", "defect"], task="binary", split_seed=0, split_hash="h", manifest=[])
        s.add(ds)
        s.flush()
        teacher = add_model(s, "resnet18", "finetune", {"pretrained": False}, dataset_id=ds.id)
        kd = add_model(s, "test_vit", "distill", {"alpha": 0.5}, teacher, ds.id)
        nokd = add_model(s, "test_vit", "distill", {"alpha": 0.0}, teacher, ds.id)
        pruned = add_model(s, "test_vit", "prune", {"ratio": 0.3}, kd, ds.id, fmt="torch-pruned")
        int8 = add_model(s, "test_vit", "quantize-static", {"label": "int8-static"}, pruned, ds.id, fmt="onnx")
        # teacher catches all 10 defects; kd 9 (misses #3); pruned 9 (misses #3); int8 8
        measure(s, teacher, {"recall": 1.0, "recall_ci_low": 0.72, "recall_ci_high": 1.0, "precision": 1.0, "f1": 1.0,
                             "fnr": 0.0, "latency_ms": 40.0, "size_mb": 45.0, "peak_rss_mb": 300.0, "cost_per_1m": 2.0},
                decisions=decisions_catching(10), throughput={1: 25.0, 16: 60.0}, latency_spread=(38.5, 45.25))
        measure(s, kd, {"recall": 0.9, "recall_ci_low": 0.6, "recall_ci_high": 1.0, "precision": 1.0, "f1": 0.947,
                        "fnr": 0.1, "latency_ms": 5.0, "size_mb": 2.0, "peak_rss_mb": 50.0, "cost_per_1m": 0.25},
                decisions=decisions_catching(10, skip=(3,)), throughput={1: 200.0, 16: 500.0})
        measure(s, nokd, {"recall": 0.7, "recall_ci_low": 0.4, "recall_ci_high": 0.9, "precision": 1.0, "f1": 0.82,
                          "fnr": 0.3, "latency_ms": 5.0, "size_mb": 2.0}, decisions=decisions_catching(7))
        measure(s, pruned, {"recall": 0.9, "recall_ci_low": 0.6, "recall_ci_high": 1.0, "precision": 1.0, "f1": 0.947,
                            "fnr": 0.1, "latency_ms": 3.0, "size_mb": 1.0}, decisions=decisions_catching(10, skip=(3,)))
        measure(s, int8, {"recall": 0.8, "recall_ci_low": 0.5, "recall_ci_high": 1.0, "precision": 1.0, "f1": 0.889,
                          "fnr": 0.2, "latency_ms": 1.0, "size_mb": 0.3}, backend="onnxruntime", precision="int8",
                decisions=decisions_catching(10, skip=(3, 5)))
        # an older, superseded latency of the teacher: the view must take the newest
        s.flush()
    with store.session() as s:
        s.add(Measurement(model_id=int8, run_id="r2", device="cpu", backend="onnxruntime", precision="int8", batch_size=1,
                          threads=2, metric="latency_ms", value=1.25, extra={}, host=HOST))
    return {"teacher": teacher, "kd": kd, "nokd": nokd, "pruned": pruned, "int8": int8}


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


def _benchmark_script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ov_runtime_precision_counts_the_layers_the_cpu_plugin_executes(tmp_path, capsys):
    """benchmarks/ov_runtime_precision.py (README_RESULTS 2.4: is a slow INT8 IR running INT8
    kernels?) reads the compiled runtime graph: a float MatMul IR executes as one float
    FullyConnected; a missing IR is a one-line error with exit code 2."""
    np = pytest.importorskip("numpy")
    ov = pytest.importorskip("openvino")
    import openvino.opset13 as ops

    x = ops.parameter([1, 8], np.float32, name="x")
    y = ops.matmul(x, ops.constant(np.ones((4, 8), np.float32)), False, True)
    xml = tmp_path / "tiny.xml"
    ov.save_model(ov.Model([y], [x], "tiny"), xml, compress_to_fp16=False)
    script = _benchmark_script("ov_runtime_precision")
    counts = script.runtime_layers(xml, threads=1)
    assert list(counts.values()) == [1]
    assert next(iter(counts)).startswith("FullyConnected f32 ")
    assert script.main([str(tmp_path / "missing.xml")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: no such IR")


def test_dumped_decisions_keep_the_paired_test_after_the_db_is_gone(store, study, db_path, tmp_path, capsys):
    """benchmarks/dump_study.py commits a study as text; mcnemar_pair.py then tests a model of a
    lost DB (its decisions.csv) against one of a live DB, with the same b/c as `table`."""
    dump, pair = _benchmark_script("dump_study"), _benchmark_script("mcnemar_pair")
    out = tmp_path / "committed"
    assert dump.main(["--db", str(db_path), "--out", str(out)]) == 0
    with (out / "decisions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and rows[0]["labels"].split() == [str(v) for v in LABELS]
    with (out / "tradeoff.csv").open() as fh:
        assert {int(r["id"]) for r in csv.DictReader(fh)} == set(study.values())
    with (out / "models.csv").open() as fh:
        assert [int(r["id"]) for r in csv.DictReader(fh)] == sorted(study.values())
    capsys.readouterr()
    assert pair.main([f"{out / 'decisions.csv'}:{study['teacher']}", f"{db_path}:{study['nokd']}"]) == 0
    printed = capsys.readouterr().out
    assert "McNemar (defects): b=3 c=0 n=10 p=0.25" in printed  # binary recall: the defects only
    assert "McNemar (all images): b=3 c=0 n=20" in printed  # every decision (none of these false alarms)
    assert "10/10 defects flagged, 0/10 false alarms" in printed and "7/10 defects flagged" in printed
    assert pair.main([f"{db_path}:{study['int8']}:onnxruntime", f"{out / 'decisions.csv'}:{study['pruned']}"]) == 0
    assert "b=0 c=1" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no recall row"):
        pair.main([f"{db_path}:{study['teacher']}:openvino", f"{db_path}:{study['kd']}"])


def test_readme_lists_every_view_column_as_documented():
    """README's column table is a copy of TRADEOFF_COLUMNS (the one place the meanings live)."""
    from pathlib import Path

    from defectopt.store.queries import TRADEOFF_COLUMNS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [k for k, v in TRADEOFF_COLUMNS.items() if f"| `{k}` | {v} |" not in readme]
    assert not missing, f"README's tradeoff column table lacks or misstates: {missing}"
