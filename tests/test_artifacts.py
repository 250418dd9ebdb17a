"""Artifacts: publish/load round trip, hash verification, no unpickling, no path escapes."""

from __future__ import annotations

import ast
import json
import pickle
from pathlib import Path

import pytest
import torch

from conftest import make_ready_model

SRC = Path(__file__).resolve().parents[1] / "src" / "defectopt"


class _Payload:
    """Unpickling this runs code: it writes the marker file. Nothing in defectopt may do that."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _set_row(store, model_id, **values):
    from defectopt.store.schema import Model

    with store.session() as s:
        row = s.get(Model, model_id)
        for k, v in values.items():
            setattr(row, k, v)


def _rehash(store, model_id):
    """Make the DB agree with a tampered folder, so only the payload check can stop the load."""
    from defectopt.models.artifacts import hash_dir

    digest, size = hash_dir(store.artifacts_root / str(model_id))
    _set_row(store, model_id, sha256=digest, size_bytes=size)


# --- round trip ---------------------------------------------------------------------------


def test_publish_and_load_round_trip(store, synthetic):
    from defectopt.models.artifacts import META_FILE, WEIGHTS_FILE, data_config, load_artifact, load_torch_model
    from defectopt.models.factory import create
    from defectopt.store.schema import Model, ModelStatus

    mid = make_ready_model(store, "test_convnext", synthetic, img_size=32, seed=3)
    with store.session() as s:
        row = s.get(Model, mid)
        assert row.status == ModelStatus.READY and row.pid is None and row.finished_at is not None
        assert row.artifact_path == str(mid) and row.size_bytes > 0 and len(row.sha256) == 64
    art = load_artifact(store, mid)
    assert art.dir == (store.artifacts_root / str(mid)).resolve()
    assert {p.name for p in art.dir.iterdir()} == {META_FILE, WEIGHTS_FILE}
    meta = json.loads((art.dir / META_FILE).read_text())
    for key in ("alias", "timm_name", "classes", "img_size", "mean", "std", "parent_id", "technique", "threshold", "format"):
        assert key in meta, key
    assert data_config(art)["input_size"] == (3, 32, 32)
    torch.manual_seed(3)
    reference = create("test_convnext", 2, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(load_torch_model(art)(x), reference(x), atol=1e-6)
    # no staging folders left behind
    assert not [p for p in store.artifacts_root.iterdir() if p.name.startswith(".staging-")]


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_publish_leaves_no_artifact(store, synthetic, exc):
    from defectopt.models import artifacts
    from defectopt.store.schema import Model, ModelStatus

    mid = artifacts.begin_model(store, alias="test_resnet", timm_name="test_resnet", technique="finetune",
                                parent_id=None, dataset_id=synthetic.id, img_size=32, num_classes=2)
    with pytest.raises(type(exc)):
        with artifacts.publish(store, mid, format="torch", meta={}) as staging:
            (staging / "model.safetensors").write_bytes(b"half")
            raise exc
    with store.session() as s:
        row = s.get(Model, mid)
        assert row.status == ModelStatus.FAILED and row.sha256 is None and row.artifact_path is None
        assert type(exc).__name__ in row.config["failure"]
    assert list(store.artifacts_root.iterdir()) == []
    with pytest.raises(artifacts.DefectoptError, match="'failed', not ready"):
        artifacts.load_artifact(store, mid)


def test_running_model_is_never_loaded(store, synthetic):
    from defectopt.errors import DefectoptError
    from defectopt.models import artifacts

    mid = artifacts.begin_model(store, alias="test_resnet", timm_name="test_resnet", technique="finetune",
                                parent_id=None, dataset_id=synthetic.id, img_size=32, num_classes=2)
    with pytest.raises(DefectoptError, match="'running', not ready"):
        artifacts.load_artifact(store, mid)
    with pytest.raises(DefectoptError, match="no model with id 999"):
        artifacts.load_artifact(store, 999)


# --- tampering ----------------------------------------------------------------------------


@pytest.mark.parametrize("tamper", ["flip_byte", "truncate", "extra_file", "delete_meta", "edit_meta"])
def test_modified_artifact_is_refused(store, ready_model, tamper):
    from defectopt.errors import DefectoptError
    from defectopt.models.artifacts import load_artifact

    folder = store.artifacts_root / str(ready_model)
    weights, meta = folder / "model.safetensors", folder / "meta.json"
    if tamper == "flip_byte":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0x01
        weights.write_bytes(bytes(data))
    elif tamper == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif tamper == "extra_file":
        (folder / "sneaky.onnx").write_bytes(b"x")
    elif tamper == "delete_meta":
        meta.unlink()
    elif tamper == "edit_meta":
        m = json.loads(meta.read_text())
        m["threshold"] = 0.01
        meta.write_text(json.dumps(m))
    with pytest.raises(DefectoptError) as exc:
        load_artifact(store, ready_model)
    msg = str(exc.value)
    assert f"model {ready_model}" in msg and "sha256" in msg and "refusing" in msg and "\n" not in msg


def test_missing_artifact_folder_is_reported(store, ready_model):
    import shutil

    from defectopt.errors import DefectoptError
    from defectopt.models.artifacts import load_artifact

    shutil.rmtree(store.artifacts_root / str(ready_model))
    with pytest.raises(DefectoptError, match="missing"):
        load_artifact(store, ready_model)


@pytest.mark.parametrize("artifact_path", ["../../etc", "/etc", "..", "", "1/../../outside"])
def test_db_artifact_path_cannot_escape_the_artifacts_folder(store, ready_model, tmp_path, artifact_path):
    from defectopt.errors import DefectoptError
    from defectopt.models.artifacts import load_artifact

    # put a folder with a valid-looking artifact outside, so only the path check can refuse it
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    _set_row(store, ready_model, artifact_path=artifact_path)
    with pytest.raises(DefectoptError, match="outside its folder"):
        load_artifact(store, ready_model)


@pytest.mark.parametrize("name", ["../meta.json", "../../../etc/passwd", "/etc/passwd", "sub/../../x", "."])
def test_names_from_metadata_cannot_escape(store, ready_model, name):
    from defectopt.errors import DefectoptError
    from defectopt.models.artifacts import load_artifact

    art = load_artifact(store, ready_model)
    with pytest.raises(DefectoptError, match="outside its folder"):
        art.file(name)
    assert art.file("model.safetensors").is_file()


def test_symlink_inside_an_artifact_cannot_point_outside(store, ready_model, tmp_path):
    from defectopt.errors import DefectoptError
    from defectopt.models.artifacts import load_artifact

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"outside")
    folder = store.artifacts_root / str(ready_model)
    (folder / "link.onnx").symlink_to(secret)
    _rehash(store, ready_model)
    art = load_artifact(store, ready_model)
    with pytest.raises(DefectoptError, match="outside its folder"):
        art.file("link.onnx")


def test_runner_file_name_from_meta_cannot_escape(store, ready_model, tmp_path):
    """A tampered (and re-hashed) meta.json naming ../../model.onnx is refused by the runner."""
    from defectopt.bench.runners import open_runner
    from defectopt.errors import DefectoptError
    from defectopt.models.artifacts import load_artifact

    folder = store.artifacts_root / str(ready_model)
    meta = json.loads((folder / "meta.json").read_text())
    meta["onnx_file"] = "../../model.onnx"
    (folder / "meta.json").write_text(json.dumps(meta))
    _set_row(store, ready_model, artifact_format="onnx")
    _rehash(store, ready_model)
    with pytest.raises(DefectoptError, match="outside its folder"):
        open_runner(load_artifact(store, ready_model), device="cpu", backend="auto")


# --- pickle payloads are never unpickled ------------------------------------------------------


def _pickle_bytes(marker: Path) -> bytes:
    return pickle.dumps({"conv.weight": _Payload(marker)})


def test_the_payload_really_executes_when_unpickled(tmp_path):
    """Control: proves the payload used below would leave the marker if anything unpickled it."""
    marker = tmp_path / "control-marker"
    pickle.loads(_pickle_bytes(marker))
    assert marker.read_text() == "pwned"


def test_pickle_in_place_of_artifact_weights_is_not_unpickled(store, ready_model, tmp_path):
    from defectopt.errors import DefectoptError
    from defectopt.models.artifacts import load_artifact, load_torch_model

    marker = tmp_path / "marker"
    folder = store.artifacts_root / str(ready_model)
    (folder / "model.safetensors").write_bytes(_pickle_bytes(marker))
    _rehash(store, ready_model)  # the attacker also controls the DB row's hash
    art = load_artifact(store, ready_model)
    with pytest.raises(DefectoptError) as exc:
        load_torch_model(art)
    assert "\n" not in str(exc.value) and "model.safetensors" in str(exc.value)
    assert not marker.exists()


def test_torch_zip_pickle_in_place_of_artifact_weights_is_not_unpickled(store, ready_model, tmp_path):
    from defectopt.errors import DefectoptError
    from defectopt.models.artifacts import load_artifact, load_torch_model

    marker = tmp_path / "marker"
    folder = store.artifacts_root / str(ready_model)
    torch.save({"conv.weight": _Payload(marker)}, folder / "model.safetensors")
    _rehash(store, ready_model)
    with pytest.raises(DefectoptError):
        load_torch_model(load_artifact(store, ready_model))
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("suffix,writer", [(".pt", "torch.save"), (".pth", "pickle"), (".bin", "torch.save"),
                                           (".safetensors", "pickle"), (".ckpt", "torch.save")])
def test_weights_file_with_pickle_payload_is_refused(tmp_path, suffix, writer):
    from defectopt.errors import DefectoptError
    from defectopt.models.factory import create, read_state_dict

    marker = tmp_path / "marker"
    path = tmp_path / f"evil{suffix}"
    if writer == "torch.save":
        torch.save({"state_dict": {"conv.weight": _Payload(marker)}}, path)
    else:
        path.write_bytes(_pickle_bytes(marker))
    with pytest.raises(DefectoptError) as exc:
        read_state_dict(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(DefectoptError):
        create("test_resnet", 2, 32, weights=path)
    assert not marker.exists()


def test_plain_tensor_checkpoint_still_loads_with_weights_only(tmp_path):
    """weights_only=True does not break honest checkpoints (timm-style nested state_dict)."""
    from defectopt.models.factory import create

    src = create("test_resnet", 2, 32)
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}, tmp_path / "ok.pth")
    loaded = create("test_resnet", 2, 32, weights=tmp_path / "ok.pth")
    for k, v in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def _unsafe_load_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = ast.unparse(func)
        kw = {k.arg: k.value for k in node.keywords}
        if name in ("pickle.load", "pickle.loads", "cPickle.load", "dill.load", "dill.loads", "joblib.load",
                    "pickle.Unpickler", "cloudpickle.load", "cloudpickle.loads", "shelve.open"):
            found.append(name)
        elif name.endswith("torch.load"):
            wo = kw.get("weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append(f"{name} without weights_only=True")
        elif name.endswith(("np.load", "numpy.load")):
            ap = kw.get("allow_pickle")
            if isinstance(ap, ast.Constant) and ap.value is True:
                found.append(f"{name}(allow_pickle=True)")
    return found


def test_no_unpickling_anywhere_in_the_source():
    """Every module, including ones added later by other commands: no pickle loads, ever."""
    offenders = {}
    for path in sorted(SRC.rglob("*.py")):
        calls = _unsafe_load_calls(ast.parse(path.read_text(), filename=str(path)))
        if calls:
            offenders[str(path.relative_to(SRC))] = calls
    assert offenders == {}


def test_source_scan_detects_unsafe_calls():
    """Control for the scan above."""
    bad = ast.parse("import pickle, torch\npickle.load(f)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
                    "np.load(p, allow_pickle=True)\ntorch.load(p, weights_only=True)\n")
    assert len(_unsafe_load_calls(bad)) == 4


def test_hash_covers_file_names_not_only_contents(tmp_path):
    from defectopt.models.artifacts import hash_dir

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"1")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "y.bin").write_bytes(b"1")
    assert hash_dir(tmp_path / "a")[0] != hash_dir(tmp_path / "b")[0]
    assert hash_dir(tmp_path / "a")[1] == 1
