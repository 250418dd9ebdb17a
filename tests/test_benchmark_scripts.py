"""The scripts under benchmarks/ that the study's README_RESULTS figures rest on: loaded from their
files (benchmarks/ is not a package) and run on tiny inputs."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
from fixtures.handbuilt_study import LABELS, build_study


@pytest.fixture
def study(store):
    return build_study(store)


def _benchmark_script(name: str):
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


def test_int8_runtime_fidelity_compares_simulation_and_runtime_per_overflow_mode(store, db_path, synthetic, tmp_path,
                                                                                capsys):
    """benchmarks/int8_runtime_fidelity.py (README_RESULTS 1.9: do OpenVINO's INT8 kernels compute
    what NNCF's fake quantizers simulate?) scores parent, simulation and runtime on val and test per
    overflow_fix mode, writes its JSON atomically, and refuses an unknown mode or DB in one line."""
    from conftest import make_ready_model

    parent_id = make_ready_model(store, "test_convnext", synthetic)
    script = _benchmark_script("int8_runtime_fidelity")
    out = tmp_path / "fidelity.json"
    assert script.main(["--db", str(db_path), "--id", str(parent_id), "--modes", "enable,disable",
                        "--calib-images", "8", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["modes"]) == {"enable", "disable"} and result["host"]["isa"] is not None
    n_test = len(synthetic.split("test"))
    for row in result["modes"].values():
        for split in ("val", "test"):
            agree = row[split]["runtime_vs_simulated"]
            assert 0.0 <= agree["top1_agreement"] <= 1.0 and agree["logit_rel_err"] < 0.5
            assert 0 <= row[split]["runtime"]["wrong"] <= (n_test if split == "test" else len(synthetic.split("val")))
    assert result["parent_fp32_torch"]["test"]["wrong"] >= 0 and not list(tmp_path.glob("*.tmp"))
    capsys.readouterr()
    assert script.main(["--db", str(db_path), "--id", str(parent_id), "--modes", "half"]) == 2
    assert "--modes takes" in capsys.readouterr().err
    assert script.main(["--db", str(tmp_path / "none.sqlite"), "--id", "1"]) == 2
    assert "no such DB" in capsys.readouterr().err
