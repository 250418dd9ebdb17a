"""Each dataset layout loader on tiny generated fixtures, the frozen split, image modes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from fixtures.builders import (
    NEU_CLASSES, make_dagm, make_image_folder, make_mvtec_category, make_neu_cls, make_neu_det, write_corrupt,
    write_image,
)


def _resolve(store, spec, **kw):
    from defectopt.data.catalog import resolve_dataset

    return resolve_dataset(store, spec, **kw)


def _split_of(info):
    return {r["path"]: r["split"] for r in info.manifest}


# --- loaders ------------------------------------------------------------------------------


def test_mvtec_single_category(store, tmp_path):
    cat = make_mvtec_category(tmp_path / "screw", {"train/good": 10, "test/good": 3, "test/scratch": 4, "test/thread": 3,
                                                   "ground_truth/scratch": 4})  # masks: not samples
    (cat / "license.txt").write_text("CC BY-NC-SA 4.0")
    ds = _resolve(store, f"mvtec:{cat}")
    assert not any(r["path"].startswith("ground_truth/") for r in ds.manifest)
    assert (ds.kind, ds.task, ds.class_names) == ("mvtec", "binary", ["good", "defect"])
    assert ds.name == "mvtec-screw"
    types = Counter((r["label"], r["defect_type"]) for r in ds.manifest)
    assert types == {(0, "good"): 13, (1, "scratch"): 4, (1, "thread"): 3}
    # every path is relative to the category folder and exists
    assert all((ds.root / r["path"]).is_file() for r in ds.manifest)


def test_mvtec_root_of_categories_with_missing_folders(store, tmp_path):
    root = tmp_path / "mvtec"
    # 'bottle' has no test/good, 'cable' has no train folder at all, 'notes' is not a category
    make_mvtec_category(root / "bottle", {"train/good": 6, "test/broken": 3})
    make_mvtec_category(root / "cable", {"test/good": 4, "test/cut": 3})
    (root / "notes").mkdir()
    (root / "readme.txt").write_text("not a category")
    ds = _resolve(store, f"mvtec:{root}")
    types = Counter(r["defect_type"] for r in ds.manifest)
    # with several categories the defect type keeps the category so strata stay distinct
    assert types == {"good": 10, "bottle/broken": 3, "cable/cut": 3}
    assert {r["path"].split("/")[0] for r in ds.manifest} == {"bottle", "cable"}


def test_neu_det_layout(store, tmp_path):
    root = make_neu_det(tmp_path / "neu-det", per_class=5)
    ds = _resolve(store, f"neu:{root}")
    assert (ds.kind, ds.task) == ("neu", "multiclass")
    assert ds.class_names == NEU_CLASSES
    assert ds.name == "neu-det"
    per_class = Counter(ds.class_names[r["label"]] for r in ds.manifest)
    assert per_class == dict.fromkeys(NEU_CLASSES, 5)
    # label = file-name prefix, defect type = class
    for r in ds.manifest:
        assert Path(r["path"]).name.startswith(ds.class_names[r["label"]] + "_")
        assert r["defect_type"] == ds.class_names[r["label"]]
        assert r["path"].startswith("IMAGES/")


def test_neu_cls_flat_layout(store, tmp_path):
    root = make_neu_cls(tmp_path / "NEU-CLS", per_class=4)
    ds = _resolve(store, f"neu:{root}")
    assert ds.class_names == NEU_CLASSES
    by_prefix = {Path(r["path"]).stem.split("_")[0]: ds.class_names[r["label"]] for r in ds.manifest}
    assert by_prefix == {"Cr": "crazing", "In": "inclusion", "Pa": "patches", "PS": "pitted_surface",
                         "RS": "rolled-in_scale", "Sc": "scratches"}


def test_neu_with_a_subset_of_classes_labels_densely(store, tmp_path):
    root = make_neu_det(tmp_path / "neu3", per_class=3, classes=["patches", "crazing", "scratches"])
    ds = _resolve(store, f"neu:{root}")
    assert ds.class_names == ["crazing", "patches", "scratches"]
    assert sorted({r["label"] for r in ds.manifest}) == [0, 1, 2]


def test_dagm_layout_root_and_single_class(store, tmp_path):
    root = make_dagm(tmp_path / "dagm", {1: (4, 2), 2: (3, 3)})
    ds = _resolve(store, f"dagm:{root}")
    assert (ds.task, ds.class_names) == ("binary", ["good", "defect"])
    types = Counter((r["label"], r["defect_type"]) for r in ds.manifest)
    # Train + Test of both classes; defect type = ClassN; Label/ masks are not samples
    assert types == {(0, "good"): 14, (1, "Class1"): 4, (1, "Class2"): 6}
    assert not any("/Label/" in r["path"] for r in ds.manifest)
    one = _resolve(store, f"dagm:{root / 'Class2'}")
    assert Counter(r["label"] for r in one.manifest) == {0: 6, 1: 6}


def test_image_folder_binary_and_multiclass(store, tmp_path):
    binary = make_image_folder(tmp_path / "bin", {"good": 6, "scratch": 3, "dent": 3})
    ds = _resolve(store, f"folder:{binary}")
    assert (ds.task, ds.class_names) == ("binary", ["good", "defect"])
    assert Counter(r["defect_type"] for r in ds.manifest) == {"good": 6, "scratch": 3, "dent": 3}
    multi = make_image_folder(tmp_path / "multi", {"rust": 3, "crack": 4, "pit": 3})
    dm = _resolve(store, f"folder:{multi}")
    assert (dm.task, dm.class_names) == ("multiclass", ["crack", "pit", "rust"])
    assert Counter(dm.class_names[r["label"]] for r in dm.manifest) == {"crack": 4, "pit": 3, "rust": 3}


def test_synthetic_spec_is_mvtec_style(store):
    ds = _resolve(store, "synthetic:60")
    assert ds.kind == "synthetic" and ds.task == "binary"
    assert set(Counter(r["defect_type"] for r in ds.manifest)) == {"good", "scratch", "spot", "crack", "stain"}
    assert len(ds.manifest) == 60


# --- frozen split -------------------------------------------------------------------------


def test_split_is_frozen_and_reused(store, tmp_path):
    cat = make_mvtec_category(tmp_path / "c", {"train/good": 12, "test/good": 3, "test/a": 5, "test/b": 5})
    first = _resolve(store, f"mvtec:{cat}")
    again = _resolve(store, f"mvtec:{cat}")
    assert again.id == first.id and again.split_hash == first.split_hash and again.manifest == first.manifest
    # the hash is a function of the file list and assignment, recomputed from scratch the same
    from defectopt.data.layouts import scan_mvtec
    from defectopt.data.split import make_split, manifest_hash

    fresh = make_split(scan_mvtec(cat).samples, 0)
    assert manifest_hash(fresh) == first.split_hash
    # a new file added later does not move the frozen split
    write_image(cat / "test" / "a" / "zz_new.png")
    later = _resolve(store, f"mvtec:{cat}")
    assert later.split_hash == first.split_hash and len(later.manifest) == len(first.manifest)


def test_different_split_seed_gives_a_different_split(store, tmp_path):
    cat = make_mvtec_category(tmp_path / "c", {"train/good": 20, "test/good": 5, "test/a": 10, "test/b": 10})
    s0 = _resolve(store, f"mvtec:{cat}", seed=0)
    s1 = _resolve(store, f"mvtec:{cat}", seed=1)
    assert s1.id != s0.id and s1.split_seed == 1
    assert s1.split_hash != s0.split_hash
    assert _split_of(s0) != _split_of(s1)
    assert set(_split_of(s0)) == set(_split_of(s1))  # same files, different assignment


def test_split_is_stratified_by_label_and_defect_type(store, tmp_path):
    cat = make_mvtec_category(tmp_path / "c", {"train/good": 30, "test/good": 10, "test/a": 10, "test/b": 5, "test/c": 3})
    ds = _resolve(store, f"mvtec:{cat}")
    per = Counter((r["defect_type"], r["split"]) for r in ds.manifest)
    for dtype in ("good", "a", "b", "c"):
        for split in ("train", "val", "test"):
            assert per[(dtype, split)] >= 1, (dtype, split)
    # 60/20/20 within each stratum
    assert (per[("good", "train")], per[("good", "val")], per[("good", "test")]) == (24, 8, 8)
    assert (per[("a", "train")], per[("a", "val")], per[("a", "test")]) == (6, 2, 2)


def test_frozen_split_refuses_when_files_disappear(store, tmp_path):
    from defectopt.errors import DefectoptError

    cat = make_mvtec_category(tmp_path / "c", {"train/good": 8, "test/a": 4})
    ds = _resolve(store, f"mvtec:{cat}")
    gone = cat / ds.manifest[0]["path"]
    gone.unlink()
    with pytest.raises(DefectoptError, match="changed since its split was frozen"):
        _resolve(store, f"mvtec:{cat}")


# --- images: modes and bad files -----------------------------------------------------------


@pytest.mark.parametrize("mode,suffix", [("L", ".png"), ("RGBA", ".png"), ("I;16", ".png"), ("LA", ".png"),
                                         ("P", ".png"), ("L", ".bmp"), ("RGB", ".jpg"), ("L", ".tif")])
def test_any_image_mode_loads_as_3_channels(tmp_path, mode, suffix):
    from defectopt.runtime.preprocess import load_rgb
    from defectopt.data.loading import eval_transform

    path = write_image(tmp_path / f"img{suffix}", mode, size=20)
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == (20, 20)
    cfg = {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "interpolation": "bilinear"}
    x = eval_transform(cfg)(img)
    assert x.shape == (3, 32, 32) and torch.isfinite(x).all()


def test_16bit_image_keeps_its_dynamic_range(tmp_path):
    import numpy as np
    from PIL import Image

    from defectopt.runtime.preprocess import load_rgb

    arr = np.linspace(0, 65535, 16 * 16).astype(np.uint16).reshape(16, 16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    out = np.asarray(load_rgb(tmp_path / "deep.png"))
    assert out.min() == 0 and out.max() == 255  # scaled, not clipped to white


def test_mixed_modes_dataset_goes_through_the_loader(store, tmp_path):
    from defectopt.data.loading import MultiViewDataset, eval_transform

    root = tmp_path / "mixed"
    for i, mode in enumerate(["L", "RGBA", "I;16", "P", "RGB", "LA"]):
        write_image(root / "good" / f"g{i}.png", mode)
        write_image(root / "dent" / f"d{i}.png", mode)
    ds = _resolve(store, f"folder:{root}")
    cfg = {"input_size": (3, 24, 24), "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bilinear"}
    items = MultiViewDataset(ds.root, ds.manifest, [eval_transform(cfg)])
    shapes = {tuple(items[i][0].shape) for i in range(len(items))}
    assert shapes == {(3, 24, 24)}


@pytest.mark.parametrize("kind", ["garbage", "empty", "truncated"])
def test_bad_image_detection(tmp_path, kind):
    from defectopt.data.images import find_bad_images

    write_image(tmp_path / "ok.jpg", "RGB")
    write_corrupt(tmp_path / f"bad_{kind}.jpg", kind)
    assert find_bad_images(tmp_path, ["ok.jpg", f"bad_{kind}.jpg"]) == [f"bad_{kind}.jpg"]


def test_skip_bad_images_records_the_count(store, tmp_path):
    from sqlalchemy import select

    from defectopt.store.schema import Dataset

    cat = make_mvtec_category(tmp_path / "c", {"train/good": 8, "test/a": 4})
    write_corrupt(cat / "train" / "good" / "broken.png", "garbage")
    write_corrupt(cat / "test" / "a" / "zero.png", "empty")
    ds = _resolve(store, f"mvtec:{cat}", skip_bad_images=True)
    assert ds.skipped_bad_images == 2 and len(ds.manifest) == 12
    assert not any(r["path"].endswith(("broken.png", "zero.png")) for r in ds.manifest)
    with store.session() as s:
        assert s.scalars(select(Dataset.skipped_bad_images)).one() == 2
