"""`export` and `predict`: the bundle reproduces bench's decisions image for image, refuses
tampering, needs no training stack, and the CLI's errors write nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_ready_model
from defectopt.errors import DefectoptError
from fixtures.clihelp import assert_user_error, run_cli


def _bench(db_path, ids: str, backend: str = "auto") -> None:
    res = run_cli(["bench", "--ids", ids, "--backend", backend, "--quick", "--no-memory", "--no-roofline",
                   "--batch-sizes", "1", "--threads", "1", "--db", db_path, "-q"])
    assert res.code == 0, res.stdout + res.stderr


def _bench_decisions(store, model_id: int, dataset, backend: str) -> np.ndarray:
    """The per-image decisions bench stored on the model's test `recall` row for that runtime."""
    from defectopt.store.schema import Measurement

    with store.session() as s:
        row = s.query(Measurement).filter_by(model_id=model_id, backend=backend, metric="recall", batch_size=0).one()
        decisions = np.asarray(row.extra["decisions"])
    assert len(decisions) == len(dataset.split("test"))
    return decisions


def test_runtime_preprocess_is_timm_eval_transform_exactly():
    from timm.data import create_transform

    from defectopt.runtime.preprocess import Preprocess, preprocess

    rng = np.random.default_rng(0)
    for (w, h), interp in (((200, 200), "bilinear"), ((256, 192), "bicubic"), ((150, 301), "bilinear")):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for mode in ("RGB", "L"):
            im = img.convert(mode)
            want = create_transform(input_size=(3, 128, 128), is_training=False, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
                                    interpolation=interp, crop_pct=1.0)(im.convert("RGB")).numpy()
            got = preprocess(im, Preprocess(128, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), interp))
            np.testing.assert_array_equal(got, want)


def test_predict_reproduces_bench_decisions_for_every_runtime(store, db_path, synthetic, tmp_path):
    """FP32 torch model shipped as ONNX and as OpenVINO IR, and its INT8 OpenVINO and ONNX QDQ children:
    predict on the frozen test images gives bench's decision for each image, and bench's counts."""
    from defectopt.compress.quantize.api import quantize_model
    from defectopt.compress.quantize.options import QuantizeOptions
    from defectopt.runtime.bundle import load_bundle
    from defectopt.runtime.predictor import PredictOptions, predict
    from defectopt.store.schema import Measurement

    parent = make_ready_model(store, "test_resnet", synthetic)
    ov_int8 = quantize_model(store, QuantizeOptions(model=str(parent), method="static", calib_images=16)).chosen.model_id
    ort_int8 = quantize_model(store, QuantizeOptions(model=str(parent), method="static", backend="onnxruntime",
                                                     calib_images=16)).chosen.model_id
    _bench(db_path, f"{parent},{ov_int8},{ort_int8}")
    _bench(db_path, str(parent), "all")
    test_paths = [str(synthetic.root / r["path"]) for r in synthetic.split("test")]
    labels = np.array([r["label"] for r in synthetic.split("test")])
    cases = [(parent, "onnx", "onnxruntime"), (parent, "openvino", "openvino"), (ov_int8, None, "openvino"),
             (ort_int8, None, "onnxruntime")]
    for model_id, fmt, backend in cases:
        out = tmp_path / f"bundle-{model_id}-{fmt}"
        args = ["export", "--id", model_id, "--out", out, "--db", db_path] + (["--format", fmt] if fmt else [])
        res = run_cli(args)
        assert res.code == 0, res.stdout + res.stderr
        bundle = load_bundle(out)
        assert bundle.data["runtime"] == backend and bundle.threshold is not None
        outcome = predict(PredictOptions(bundle=str(out), paths=tuple(test_paths), batch_size=5, threads=1))
        got = np.array([int(r.flagged) for r in outcome.results])
        want = _bench_decisions(store, model_id, synthetic, backend)
        np.testing.assert_array_equal(got, want, err_msg=f"model {model_id} as {bundle.format}")
        with store.session() as s:
            stored = {m.metric: m.value for m in s.query(Measurement).filter_by(model_id=model_id, backend=backend,
                                                                                   batch_size=0)}
        assert stored["tp"] == int(((got == 1) & (labels == 1)).sum())
        assert stored["fn"] == int(((got == 0) & (labels == 1)).sum())
        info = json.loads((out / "bundle.json").read_text())
        assert info["decision"]["target_recall"] == 0.99 and info["lineage"][0]["id"] == model_id
        assert {m["metric"] for m in info["measurements"]} >= {"recall", "latency_ms"}
        assert all("cpu" in m["host"] for m in info["measurements"])


def test_tflite_bundle_reproduces_bench_litert_decisions(store, db_path, synthetic, tmp_path):
    from defectopt.models.export import litert_available

    if not litert_available():
        pytest.skip("LiteRT is an optional extra: pip install 'defectopt[tflite]'")
    from defectopt.runtime.predictor import PredictOptions, predict

    mid = make_ready_model(store, "test_resnet", synthetic)
    _bench(db_path, str(mid))  # the threshold, from the native runtime
    _bench(db_path, str(mid), "litert")
    out = tmp_path / "b"
    assert run_cli(["export", "--id", mid, "--out", out, "--format", "tflite", "--db", db_path]).code == 0
    paths = tuple(str(synthetic.root / r["path"]) for r in synthetic.split("test"))
    got = np.array([int(r.flagged) for r in predict(PredictOptions(bundle=str(out), paths=paths, threads=1)).results])
    np.testing.assert_array_equal(got, _bench_decisions(store, mid, synthetic, "litert"))


def test_bundle_refuses_tampering_and_extra_files(store, db_path, synthetic, tmp_path):
    from defectopt.runtime.bundle import load_bundle

    mid = make_ready_model(store, "test_resnet", synthetic)
    _bench(db_path, str(mid))
    out = tmp_path / "b"
    assert run_cli(["export", "--id", mid, "--out", out, "--format", "onnx", "--db", db_path]).code == 0
    load_bundle(out)
    (out / "notes.txt").write_text("x")
    with pytest.raises(DefectoptError, match="does not list: notes.txt"):
        load_bundle(out)
    (out / "notes.txt").unlink()
    with open(out / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    assert_user_error(run_cli(["predict", "--bundle", out, str(synthetic.root)]), "was modified")
    meta = json.loads((out / "bundle.json").read_text())
    meta["files"]["../escape.onnx"] = "0" * 64
    (out / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(DefectoptError):
        load_bundle(out)


def test_export_errors_write_nothing(store, db_path, synthetic, tmp_path):
    mid = make_ready_model(store, "test_resnet", synthetic)
    out = tmp_path / "b"
    assert_user_error(run_cli(["export", "--id", mid, "--out", out, "--db", db_path]), "no val-calibrated threshold")
    from defectopt.models.export import litert_available

    if not litert_available():
        assert_user_error(run_cli(["export", "--id", mid, "--out", out, "--format", "tflite", "--db", db_path]),
                          "defectopt[tflite]")
    assert_user_error(run_cli(["export", "--id", "999", "--out", out, "--db", db_path]), "999")
    assert not out.exists() and not list(tmp_path.glob(".b.*"))
    _bench(db_path, str(mid))
    assert run_cli(["export", "--id", mid, "--out", out, "--db", db_path]).code == 0
    assert_user_error(run_cli(["export", "--id", mid, "--out", out, "--db", db_path]), "already exists")
    assert run_cli(["export", "--id", mid, "--out", out, "--force", "--db", db_path]).code == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "db") == ["b"]  # no leftover staging folder


def test_predict_cli_outputs_bad_images_and_exit_codes(store, db_path, synthetic, tmp_path):
    mid = make_ready_model(store, "test_resnet", synthetic)
    _bench(db_path, str(mid))
    folder = synthetic.root / "test"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "r.csv"
    assert_user_error(run_cli(["predict", "--id", mid, str(folder), str(bad), "--out", out, "--db", db_path]),
                      "unreadable image")
    assert not out.exists()
    res = run_cli(["predict", "--id", mid, str(folder), str(bad), "--skip-bad-images", "--out", out, "--db", db_path, "-q"])
    assert res.code == 0, res.stdout + res.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "path,score,flagged,predicted,ms" and len(lines) == 1 + len(list(folder.rglob("*.png")))
    assert "1 unreadable" in " ".join(res.stdout.split())
    js = tmp_path / "r.json"
    res = run_cli(["predict", "--id", mid, f"{folder}/**/*.png", "--out", js, "--fail-on-defect", "--db", db_path, "-q"])
    doc = json.loads(js.read_text())
    assert res.code == (3 if doc["summary"]["flagged"] else 0)
    assert_user_error(run_cli(["predict", str(folder), "--db", db_path]), "exactly one of --bundle")
    assert_user_error(run_cli(["predict", "--id", mid, str(tmp_path / "nothing*.png"), "--db", db_path]), "no images found")
    assert_user_error(run_cli(["predict", "--id", mid, str(tmp_path / "missing.png"), "--db", db_path]), "no such file")


def test_runtime_runs_where_torch_cannot_be_imported(store, db_path, synthetic, tmp_path):
    mid = make_ready_model(store, "test_resnet", synthetic)
    _bench(db_path, str(mid))
    out = tmp_path / "b"
    assert run_cli(["export", "--id", mid, "--out", out, "--format", "openvino", "--db", db_path]).code == 0
    image = next((synthetic.root / "test").rglob("*.png"))
    script = textwrap.dedent(f"""
        import sys
        class Block:
            BLOCKED = ("torch", "torchvision", "timm", "sqlalchemy", "typer", "pandas")
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in self.BLOCKED:
                    raise ImportError(f"{{name}} is blocked in this test")
        sys.meta_path.insert(0, Block())
        from defectopt.runtime.bundle import load_bundle
        from defectopt.runtime.predictor import Predictor
        (r,) = Predictor(load_bundle({str(out)!r})).predict_paths([{str(image)!r}])
        assert not any(m.split(".")[0] in Block.BLOCKED for m in sys.modules), sorted(sys.modules)
        print("ok", r.flagged, round(r.score, 4))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parent)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stderr[-2000:]
