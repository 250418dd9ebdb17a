"""`defectopt bench`: rows per run with the host fingerprint, skip/force, clean failures,
runtime parity of derived ONNX Runtime / OpenVINO exports, atomic row sets."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from conftest import make_ready_model
from defectopt.cli import app
from defectopt.store.schema import HostPeak, Measurement, Model

QUICK = ["--quick", "--batch-sizes", "1,2", "--threads", "1"]


def _rows(store, model_id=None):
    with store.session() as s:
        q = select(Measurement)
        if model_id is not None:
            q = q.where(Measurement.model_id == model_id)
        rows = s.scalars(q).all()
        for r in rows:
            s.expunge(r)
        return rows


def test_bench_writes_one_row_set_per_run_with_host_fingerprint(store, synthetic, ready_model):
    from defectopt.bench.evaluate import predict_split
    from defectopt.bench.runners import open_runner
    from defectopt.runtime.preprocess import binary_decisions
    from defectopt.metrics import resolve
    from defectopt.models.artifacts import load_artifact

    result = CliRunner().invoke(app, ["bench", "--ids", "all", *QUICK, "-q"])
    assert result.exit_code == 0, result.output
    rows = _rows(store, ready_model)
    assert len({r.run_id for r in rows}) == 1
    assert {(r.device, r.backend, r.precision, r.threads) for r in rows} == {("cpu", "torch", "fp32", 1)}
    host_hashes = {r.host["hash"] for r in rows}
    assert len(host_hashes) == 1 and all(r.host["cpu"] and "isa" in r.host for r in rows)
    by = {(r.metric, r.batch_size): r for r in rows}
    for m in ("recall", "precision", "f1", "fnr", "accuracy", "auroc", "tp", "fn", "fp", "tn", "recall_argmax",
              "recall_ci_low", "recall_ci_high", "size_mb", "param_count", "gmacs"):
        assert (m, 0) in by, m  # task and static rows: batch 0
    for b in (1, 2):
        for m in ("latency_ms", "latency_p50_ms", "latency_p95_ms", "throughput_ips", "core_ms_per_image",
                  "cost_per_1m", "achieved_gmacs_per_s", "roofline_fraction"):
            assert (m, b) in by, (m, b)
        assert "p10_ms" in by[("latency_ms", b)].extra and "block_medians_ms" in by[("latency_ms", b)].extra
    assert by[("peak_rss_mb", 1)].value > 0
    # the view carries each row's batch-1 spread beside its latency
    from defectopt.store.queries import tradeoff_frame

    view = tradeoff_frame(store, ids=[ready_model]).iloc[0]
    assert view["latency_ms_p10"] == pytest.approx(by[("latency_ms", 1)].extra["p10_ms"])
    assert view["latency_ms_p90"] == pytest.approx(by[("latency_ms", 1)].extra["p90_ms"])
    assert view["latency_ms_p10"] <= view["latency_ms"] <= view["latency_ms_p90"]
    assert any(m.startswith("recall_type:") for m, _ in by)
    for r in rows:
        resolve(r.metric)
    # cost proxy: core-ms = latency x threads; $ per 1M at 0.05 $/core-hour
    core_ms = by[("core_ms_per_image", 1)].value
    assert core_ms == pytest.approx(by[("latency_ms", 1)].value * 1)
    assert by[("cost_per_1m", 1)].value == pytest.approx(core_ms / 3.6e6 * 0.05 * 1e6)
    with store.session() as s:
        assert s.scalars(select(HostPeak).where(HostPeak.host_hash == host_hashes.pop())).first() is not None
        threshold = s.get(Model, ready_model).threshold
    # the stored threshold reaches the target recall on val with the same runner
    assert threshold is not None and by[("recall", 0)].extra["threshold"] == threshold
    art = load_artifact(store, ready_model)
    logits, labels = predict_split(open_runner(art, threads=1), synthetic, "val")
    assert binary_decisions(logits, threshold)[labels == 1].mean() >= 0.99
    assert art.meta.get("threshold") is None  # the immutable artifact is not rewritten

    # already measured: skipped, nothing new
    again = CliRunner().invoke(app, ["bench", "--ids", str(ready_model), *QUICK, "--no-memory", "-q"])
    assert again.exit_code == 0 and "skipped" in again.output
    assert len(_rows(store, ready_model)) == len(rows)
    # --force: re-measured, the old set replaced by a new run
    forced = CliRunner().invoke(app, ["bench", "--ids", str(ready_model), *QUICK, "--no-memory", "--force", "-q"])
    assert forced.exit_code == 0, forced.output
    new_rows = _rows(store, ready_model)
    assert len({r.run_id for r in new_rows}) == 2  # memory row kept from the first run (not re-measured)
    assert len([r for r in new_rows if r.metric == "recall"]) == 1


def test_missing_or_tampered_artifact_fails_cleanly_others_continue(store, synthetic):
    import shutil

    good = make_ready_model(store, "test_resnet", synthetic)
    tampered = make_ready_model(store, "test_resnet", synthetic, seed=1)
    missing = make_ready_model(store, "test_resnet", synthetic, seed=2)
    with open(store.artifacts_root / str(tampered) / "model.safetensors", "ab") as fh:
        fh.write(b"\0")
    shutil.rmtree(store.artifacts_root / str(missing))
    result = CliRunner().invoke(app, ["bench", "--ids", f"{tampered},{missing},{good}", *QUICK, "--batch-sizes", "1",
                                      "--no-memory", "--no-roofline", "-q"])
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    bad = [ln for ln in lines if "failed:" in ln]
    assert len(bad) == 2
    assert any(f"model {tampered}" in ln and "sha256" in ln for ln in bad)
    assert any(f"model {missing}" in ln and "missing" in ln for ln in bad)
    assert "Traceback" not in result.output
    assert _rows(store, tampered) == [] and _rows(store, missing) == []
    assert any(r.metric == "latency_ms" for r in _rows(store, good))


def test_unknown_ids_and_bad_options_are_one_line_errors(store):
    result = CliRunner().invoke(app, ["bench", "--ids", "1,x"])
    assert result.exit_code != 0
    from defectopt.bench.api import parse_ids
    from defectopt.bench.options import parse_batch_sizes
    from defectopt.errors import DefectoptError

    with pytest.raises(DefectoptError):
        parse_ids(store, "3,a")
    assert parse_ids(store, "2-4,7") == [2, 3, 4, 7]
    with pytest.raises(DefectoptError):
        parse_batch_sizes("1,0")


def test_derived_onnxruntime_and_openvino_match_torch(store, synthetic):
    from defectopt.bench.runners import available_backends, open_runner
    from defectopt.bench.runners.derived import derived_root
    from defectopt.bench.timing import random_batch
    from defectopt.models.artifacts import hash_dir, load_artifact

    mid = make_ready_model(store, "test_convnext", synthetic)
    art = load_artifact(store, mid)
    assert set(available_backends(art, "cpu")) >= {"torch", "onnxruntime", "openvino"}
    x = random_batch(art.img_size, 3, seed=5)
    ref = open_runner(art, backend="torch", threads=1).predict(x)
    for backend in ("onnxruntime", "openvino"):
        runner = open_runner(art, backend=backend, threads=1)
        assert runner.backend == backend and runner.precision == "fp32"
        np.testing.assert_allclose(runner.predict(x), ref, rtol=1e-3, atol=1e-4)
        assert runner.derived_from and str(derived_root(art)) in runner.derived_from
    assert runner.settings["inference_precision_hint"].lower() in ("f32", "<type: 'float32'>") or "32" in runner.settings["inference_precision_hint"]
    # cached beside, never inside, the immutable artifact; the artifact still verifies
    assert not (art.dir / "model.onnx").exists() and hash_dir(art.dir)[0] == art.sha256
    onnx_file = derived_root(art) / "onnx" / "model.onnx"
    stamp = onnx_file.stat().st_mtime_ns
    open_runner(art, backend="onnxruntime", threads=1)
    assert onnx_file.stat().st_mtime_ns == stamp  # re-used, not re-exported


def test_tensorrt_on_cpu_is_refused_clearly(store, synthetic, ready_model):
    from defectopt.bench.runners import open_runner
    from defectopt.errors import DefectoptError
    from defectopt.models.artifacts import load_artifact

    with pytest.raises(DefectoptError, match="cuda"):
        open_runner(load_artifact(store, ready_model), backend="tensorrt")


def test_a_crash_mid_run_writes_no_half_set(store, synthetic, ready_model, monkeypatch):
    from defectopt.bench import api
    from defectopt.bench.options import BenchOptions

    def boom(*a, **k):
        raise RuntimeError("simulated crash while timing")

    monkeypatch.setattr(api, "_efficiency_rows", boom)
    opts = BenchOptions(ids=str(ready_model), batch_sizes=(1,), threads=1, quick=True, memory=False, roofline=False,
                        bootstrap=50)
    outcomes = api.run_bench(store, opts)
    assert outcomes[0].status == "failed" and outcomes[0].bug and "simulated crash" in outcomes[0].message
    assert api.exit_code(outcomes) == 1
    assert _rows(store, ready_model) == []  # task metrics were computed, but nothing was committed


def test_help_explains_every_metric():
    from defectopt.metrics import all_metrics

    out = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "200"}).output
    for m in all_metrics():
        assert m.name in out, m.name


def test_full_grid_int8_on_a_cpu_without_vnni_is_named_in_the_outcome(store, synthetic, ready_model, monkeypatch):
    """bench measures what the CPU computes; where an INT8 model's weights use the full 8-bit grid
    and the CPU has no VNNI/AMX (its INT8 kernels saturate: README_RESULTS 1.9), the outcome says
    why its recall may be lower and how to re-quantize; a 7-bit grid or a VNNI CPU gets no note."""
    from defectopt.bench import api, host
    from defectopt.bench.options import BenchOptions
    from defectopt.compress.quantize.api import quantize_model
    from defectopt.compress.quantize.options import QuantizeOptions

    ids = {mode: quantize_model(store, QuantizeOptions(model=str(ready_model), method="static", calib_images=8,
                                                       overflow_fix=mode)).results[0].model_id
           for mode in ("disable", "enable")}
    opts = BenchOptions(ids=f"{ids['disable']},{ids['enable']},{ready_model}", batch_sizes=(1,), threads=1, quick=True,
                        memory=False, roofline=False, bootstrap=50, backend="openvino")
    for has_dot in (False, True):
        monkeypatch.setattr(host, "cpu_has_int8_dot", lambda has_dot=has_dot: has_dot)
        noted = {o.model_id: "can saturate" in o.message for o in api.run_bench(store, replace(opts, force=True))}
        assert noted == {ids["disable"]: not has_dot, ids["enable"]: False, ready_model: False}, noted
