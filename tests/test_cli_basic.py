"""Foundation commands end to end: data info/synth, models, ls, show, gc; real datasets."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from pathlib import Path

from conftest import make_ready_model, needs_shared
from fixtures.builders import make_mvtec_category, write_corrupt
from fixtures.clihelp import assert_user_error, db_state, run_cli, run_cli_subprocess


REPO = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_data_info_prints_counts_and_the_frozen_split(db_path, tmp_path):
    cat = make_mvtec_category(tmp_path / "widget", {"train/good": 10, "test/good": 5, "test/dent": 5, "test/hole": 5})
    first = run_cli(["data", "info", f"mvtec:{cat}"])
    assert first.code == 0, first.stderr
    out = first.stdout
    assert "mvtec-widget" in out and "binary" in out
    assert re.search(r"good\s+9\s+3\s+3\s+15", out), out
    assert re.search(r"dent\s+3\s+1\s+1\s+5", out), out
    h1 = re.search(r"sha256 ([0-9a-f]{16})", out).group(1)
    again = run_cli(["data", "info", f"mvtec:{cat}"])
    assert re.search(r"sha256 ([0-9a-f]{16})", again.stdout).group(1) == h1
    other = run_cli(["data", "info", f"mvtec:{cat}", "--split-seed", "7"])
    assert other.code == 0 and "seed 7" in other.stdout
    assert re.search(r"sha256 ([0-9a-f]{16})", other.stdout).group(1) != h1


def test_data_info_skip_bad_images_records_the_count(db_path, tmp_path):
    cat = make_mvtec_category(tmp_path / "c", {"train/good": 8, "test/dent": 4})
    write_corrupt(cat / "test" / "dent" / "broken.png", "truncated")
    write_corrupt(cat / "train" / "good" / "zero.png", "empty")
    refused = run_cli(["data", "info", f"mvtec:{cat}"])
    line = assert_user_error(refused, "2 corrupt", "broken.png", "zero.png", "--skip-bad-images")
    assert db_state(db_path)["counts"]["datasets"] == 0, line
    ok = run_cli(["data", "info", f"mvtec:{cat}", "--skip-bad-images"])
    assert ok.code == 0 and "skipped 2 corrupt/empty images" in ok.stdout
    assert db_state(db_path)["counts"]["datasets"] == 1


def test_data_synth_writes_a_loadable_dataset(db_path, tmp_path):
    out = tmp_path / "synth"
    res = run_cli(["data", "synth", "--out", out, "--n", "40", "--size", "32"])
    assert res.code == 0, res.stderr
    assert sorted(p.name for p in (out / "surface" / "test").iterdir()) == ["crack", "good", "scratch", "spot", "stain"]
    info = run_cli(["data", "info", f"mvtec:{out / 'surface'}"])
    assert info.code == 0 and "40" in info.stdout


def test_data_synth_into_an_existing_non_empty_folder(db_path, tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    res = run_cli(["data", "synth", "--out", out, "--n", "40", "--size", "32"])
    assert res.code == 0, res.stderr
    assert (out / "notes.txt").read_text() == "keep me"
    assert len(list((out / "surface").rglob("*.png"))) == 40
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp folder left


def test_models_lists_every_alias_with_params_and_gmacs():
    from defectopt.models.registry import REGISTRY

    res = run_cli(["models"])
    assert res.code == 0, res.stderr
    for alias, spec in REGISTRY.items():
        assert alias in res.stdout and spec.timm_name in res.stdout
    # timm's reference numbers at 224: ViT-B/16 86.6 M params, 17.6 GMACs; ResNet-50 25.6 M, 4.1 GMACs
    assert re.search(r"vit_base_patch16_224.*?86\.\d\d\s+17\.\d\d", res.stdout), res.stdout
    assert re.search(r"resnet50\s.*?25\.\d\d\s+4\.\d\d", res.stdout)


def test_ls_and_show_lineage_and_measurements(store, synthetic):
    from defectopt.store.schema import Measurement

    teacher = make_ready_model(store, "test_vit", synthetic)
    student = make_ready_model(store, "test_resnet", synthetic, parent_id=teacher, technique="distill")
    with store.session() as s:
        s.add(Measurement(model_id=student, run_id="r", device="cpu", backend="torch", precision="fp32",
                          batch_size=0, threads=2, metric="recall", value=0.875))
    res = run_cli(["ls"])
    assert res.code == 0, res.stderr
    assert re.search(rf"{student}\s+test_resnet\s+← {teacher} test_vit\s+distill", res.stdout), res.stdout
    shown = run_cli(["show", str(student)])
    assert shown.code == 0
    for needle in ("test_resnet", "ready", "distill", "recall", "0.875", synthetic.name):
        assert needle in shown.stdout, needle
    # lineage labels contain brackets: printed literally, not swallowed as Rich markup
    assert "test_vit → test_resnet[no-KD]" in shown.stdout, shown.stdout


@pytest.mark.parametrize("args,needle", [
    (["show", "abc"], "Invalid value for 'model_id'"),
    (["show"], "Missing argument"),
    (["no-such-command"], "No such command"),
    (["data", "synth", "--n", "3", "--out", "x"], "--n"),
    (["ls", "--bogus"], "No such option"),
])
def test_usage_errors_are_one_line_too(db_path, args, needle):
    assert_user_error(run_cli(args), needle, "--help")


def test_error_messages_keep_brackets(db_path, tmp_path):
    res = run_cli(["data", "info", f"folder:{tmp_path / '[train]' / 'x'}"])
    assert_user_error(res, "[train]/x", "does not exist")


def test_stale_running_row_is_shown_by_ls_and_cleaned_by_gc(store, synthetic):
    from defectopt.models import artifacts
    from defectopt.store.schema import Model, ModelStatus

    keep = make_ready_model(store, "test_resnet", synthetic)
    mid = artifacts.begin_model(store, alias="test_resnet", timm_name="test_resnet", technique="finetune",
                                parent_id=None, dataset_id=synthetic.id, img_size=32, num_classes=2)
    with store.session() as s:
        s.get(Model, mid).pid = _dead_pid()  # the owner was killed
    live = artifacts.begin_model(store, alias="test_resnet", timm_name="test_resnet", technique="finetune",
                                 parent_id=None, dataset_id=synthetic.id, img_size=32, num_classes=2)  # owner: us
    root = store.artifacts_root
    (root / f".staging-{mid}-deadbeef").mkdir()
    (root / f".staging-{mid}-deadbeef" / "model.safetensors").write_bytes(b"partial")
    (root / f".staging-{live}-cafe0000").mkdir()
    (root / "9999").mkdir()  # orphan folder without a row
    listed = run_cli(["ls"])
    assert re.search(rf"{mid}\s+test_resnet.*running", listed.stdout), listed.stdout
    res = run_cli(["gc"])
    assert res.code == 0, res.stderr
    assert f"[{mid}]" in res.stdout and "removed 2 orphan folder" in res.stdout
    with store.session() as s:
        assert s.get(Model, mid).status == ModelStatus.FAILED
        assert s.get(Model, live).status == ModelStatus.RUNNING  # its owner is alive: untouched
        assert s.get(Model, keep).status == ModelStatus.READY
    assert sorted(p.name for p in root.iterdir()) == sorted([str(keep), f".staging-{live}-cafe0000"])
    assert re.search(rf"{mid}\s+test_resnet.*failed", run_cli(["ls"]).stdout)
    artifacts.load_artifact(store, keep)  # still loads
    deleted = run_cli(["gc", "--delete-failed"])
    assert deleted.code == 0 and "deleted 1 failed row" in deleted.stdout


def test_user_error_through_the_real_console_script(db_path):
    """One subprocess run: what a shell sees (exit status 2, one line, no traceback)."""
    res = run_cli_subprocess(["show", "4242"])
    assert_user_error(res, "no model with id 4242")


# --- real data (read-only, ../shared/data) ---------------------------------------------------


@pytest.mark.shared_data
def test_real_neu_det_has_6_classes_of_300(db_path, monkeypatch):
    needs_shared("neu-det")
    monkeypatch.chdir(REPO)  # the exact command, relative to the repository root
    if not (REPO / "../shared/data/neu-det").resolve().is_dir():
        pytest.skip("../shared/data/neu-det is not beside this checkout")
    res = run_cli(["data", "info", "neu:../shared/data/neu-det"])
    assert res.code == 0, res.stderr
    for cls in ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"):
        assert re.search(rf"{cls}\s+180\s+60\s+60\s+300", res.stdout), cls
    assert re.search(r"all\s+1080\s+360\s+360\s+1800", res.stdout)
    assert "frozen split: seed 0" in res.stdout


@pytest.mark.shared_data
def test_real_mvtec_screw_good_and_defect_counts(db_path):
    screw = needs_shared("mvtec", "screw")
    res = run_cli(["data", "info", f"mvtec:{screw}"])
    assert res.code == 0, res.stderr
    assert "binary" in res.stdout
    assert re.search(r"good\s+217\s+72\s+72\s+361", res.stdout), res.stdout
    assert re.search(r"defect\s+71\s+24\s+24\s+119", res.stdout)
