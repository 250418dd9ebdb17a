"""Bad input catalogue: every command, every kind of bad input a user can give.

Each case must end with exactly one line on stderr naming the problem, exit code 2, no
traceback, and the results DB unchanged (row counts, logical dump, and file hash after a WAL
checkpoint; for files that are not SQLite, their bytes). Cases of a command that is not in
the CLI yet are skipped with that reason (the command's helper adds it).
"""

from __future__ import annotations

import os
import pickle
import shutil
import sqlite3
import subprocess
import sys

import pytest
import torch

from conftest import make_ready_model
from fixtures.builders import make_image_folder, make_mvtec_category, write_corrupt, write_image
from fixtures.clihelp import assert_user_error, db_state, run_cli, run_cli_subprocess

CUDA = torch.cuda.is_available()


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.fixture(scope="module")
def world(tmp_path_factory, data_cache):
    """A baseline store (synthetic:80, a ready teacher, a 3-class dataset with a ready model,
    a 'running' row) plus a folder of bad inputs. Each test works on its own copy of the DB."""
    from defectopt.data.catalog import resolve_dataset
    from defectopt.models import artifacts
    from defectopt.store.db import open_store

    base = tmp_path_factory.mktemp("world")
    old = {k: os.environ.get(k) for k in ("DEFECTOPT_DATA_CACHE", "DEFECTOPT_ARTIFACTS")}
    os.environ["DEFECTOPT_DATA_CACHE"] = str(data_cache)
    os.environ.pop("DEFECTOPT_ARTIFACTS", None)
    try:
        store = open_store(base / "db" / "base.sqlite")
        syn = resolve_dataset(store, "synthetic:80")
        teacher = make_ready_model(store, "test_resnet", syn, img_size=32)
        multi_root = make_image_folder(base / "three", {"rust": 5, "crack": 5, "pit": 5})
        multi = resolve_dataset(store, f"folder:{multi_root}")
        multi_model = make_ready_model(store, "test_resnet", multi, img_size=32)
        from defectopt.store.schema import Measurement

        with store.session() as s:  # bench-like rows, so table/plot have something to show
            for mid, recall, lat in ((teacher, 0.9, 3.0), (multi_model, 0.8, 2.5)):
                for metric, value, batch in (("recall", recall, 0), ("latency_ms", lat, 1), ("size_mb", 0.5, 0)):
                    s.add(Measurement(model_id=mid, run_id=f"r{mid}", device="cpu", backend="torch", precision="fp32",
                                      batch_size=batch, threads=2, metric=metric, value=value, host={"cpu": "test"}))
        tampered = make_ready_model(store, "test_resnet", syn, img_size=32, seed=1)
        weights = store.artifacts_root / str(tampered) / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-3] ^= 0x10  # one flipped bit in a weight: a silently different model
        weights.write_bytes(bytes(data))
        running = artifacts.begin_model(store, alias="test_resnet", timm_name="test_resnet", technique="finetune",
                                        parent_id=None, dataset_id=syn.id, img_size=32, num_classes=2)
        store.dispose()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    bad = base / "bad"
    (bad / "empty").mkdir(parents=True)
    (bad / "a_file.txt").write_text("just text")
    noise = bad / "no_layout"
    (noise / "docs").mkdir(parents=True)
    (noise / "docs" / "manual.pdf").write_bytes(b"%PDF-1.4")
    (noise / "readme.txt").write_text("hello")
    write_image(noise / "docs" / "photo.png")  # an image, but in no known layout for mvtec/dagm
    for i in range(3):
        write_image(bad / "neu_badnames" / f"holiday_{i}.jpg", "RGB")
    make_mvtec_category(bad / "corrupt", {"train/good": 6, "test/dent": 3})
    write_corrupt(bad / "corrupt" / "test" / "dent" / "broken.png", "garbage")
    make_mvtec_category(bad / "zero", {"train/good": 6, "test/dent": 3})
    write_corrupt(bad / "zero" / "train" / "good" / "zero.png", "empty")
    make_mvtec_category(bad / "truncated", {"train/good": 6, "test/dent": 3})
    write_corrupt(bad / "truncated" / "test" / "dent" / "cut.jpg", "truncated")
    make_mvtec_category(bad / "only_good", {"train/good": 6, "test/good": 3})
    (bad / "dagm_nolabels" / "Class1" / "Train").mkdir(parents=True)
    write_image(bad / "dagm_nolabels" / "Class1" / "Train" / "0001.PNG")
    make_image_folder(bad / "one_class", {"scratch": 4})
    (bad / "not_sqlite.sqlite").write_text("model,recall\n1,0.9\n")
    newer = bad / "newer.sqlite"
    shutil.copyfile(base / "db" / "base.sqlite", newer)
    con = sqlite3.connect(newer, isolation_level=None)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("UPDATE alembic_version SET version_num = '9999_future'")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    torch.save({"state_dict": {"w": _Payload(bad / "PWNED")}}, bad / "evil.pth")
    (bad / "evil.safetensors").write_bytes(pickle.dumps({"w": _Payload(bad / "PWNED")}))
    con = sqlite3.connect(base / "db" / "base.sqlite", isolation_level=None)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return {"base": base, "bad": bad, "teacher": teacher, "multi_model": multi_model, "running": running,
            "tampered": tampered,
            "multi_spec": f"folder:{multi_root}"}


@pytest.fixture
def case_db(world, tmp_path, monkeypatch, data_cache):
    src = world["base"] / "db"
    dst = tmp_path / "db"
    shutil.copytree(src, dst)
    monkeypatch.setenv("DEFECTOPT_DB", str(dst / "base.sqlite"))
    monkeypatch.setenv("DEFECTOPT_DATA_CACHE", str(data_cache))
    monkeypatch.delenv("DEFECTOPT_ARTIFACTS", raising=False)
    return dst / "base.sqlite"


def _commands() -> set[str]:
    from defectopt.cli import app

    import typer.main

    group = typer.main.get_command(app)
    return set(group.commands)


# (id, command words, argument template, needles that the one line must contain)
# Templates: {bad} folder of bad inputs, {teacher}/{multi_model}/{running} model IDs, {multi_spec}.
CASES = [
    # --- dataset specs and folders (data info; every command resolves specs the same way)
    ("spec-unknown-kind", ["data", "info", "nonsense:/x"], ["malformed dataset spec", "nonsense:/x"]),
    ("spec-bad-synthetic-n", ["data", "info", "synthetic:lots"], ["malformed dataset spec", "integer"]),
    ("spec-synthetic-too-small", ["data", "info", "synthetic:5"], ["malformed dataset spec", "40"]),
    ("spec-missing-path", ["data", "info", "neu:"], ["malformed dataset spec", "missing PATH"]),
    ("folder-missing", ["data", "info", "mvtec:{bad}/nowhere"], ["nowhere", "does not exist"]),
    ("folder-is-a-file", ["data", "info", "folder:{bad}/a_file.txt"], ["a_file.txt", "not a folder"]),
    ("folder-empty-mvtec", ["data", "info", "mvtec:{bad}/empty"], ["empty", "no MVTec AD layout"]),
    ("folder-empty-imagefolder", ["data", "info", "folder:{bad}/empty"], ["empty", "no ImageFolder layout"]),
    ("folder-empty-dagm", ["data", "info", "dagm:{bad}/empty"], ["empty", "no DAGM"]),
    ("folder-empty-neu", ["data", "info", "neu:{bad}/empty"], ["empty", "no NEU layout"]),
    ("no-known-layout-mvtec", ["data", "info", "mvtec:{bad}/no_layout"], ["no_layout", "no MVTec AD layout"]),
    ("no-known-layout-dagm", ["data", "info", "dagm:{bad}/no_layout"], ["no_layout", "no DAGM"]),
    ("neu-bad-file-names", ["data", "info", "neu:{bad}/neu_badnames"], ["holiday_", "NEU naming"]),
    ("dagm-without-labels", ["data", "info", "dagm:{bad}/dagm_nolabels"], ["Label/Labels.txt"]),
    ("imagefolder-one-class", ["data", "info", "folder:{bad}/one_class"], ["only one class", "scratch"]),
    ("dataset-of-one-label", ["data", "info", "mvtec:{bad}/only_good"], ["one class only", "good"]),
    ("corrupt-image", ["data", "info", "mvtec:{bad}/corrupt"], ["corrupt", "broken.png", "--skip-bad-images"]),
    ("zero-byte-image", ["data", "info", "mvtec:{bad}/zero"], ["corrupt or empty", "zero.png"]),
    ("truncated-jpeg", ["data", "info", "mvtec:{bad}/truncated"], ["corrupt", "cut.jpg"]),
    # --- the store
    ("db-not-sqlite", ["ls", "--db", "{bad}/not_sqlite.sqlite"], ["not_sqlite.sqlite", "SQLite database"]),
    ("db-not-sqlite-data", ["data", "info", "synthetic:80", "--db", "{bad}/not_sqlite.sqlite"], ["not_sqlite.sqlite", "SQLite database"]),
    ("db-is-a-directory", ["ls", "--db", "{bad}/empty"], ["is a directory"]),
    ("db-newer-than-code", ["show", "{teacher}", "--db", "{bad}/newer.sqlite"], ["9999_future", "newer"]),
    ("db-under-a-file", ["ls", "--db", "{bad}/a_file.txt/x.sqlite"], ["cannot create folder"]),
    # --- models by ID
    ("show-unknown-id", ["show", "4242"], ["no model with id 4242"]),
    ("show-not-an-id", ["show", "seven"], ["model_id"]),
    # --- output paths
    ("synth-out-not-writable", ["data", "synth", "--out", "{bad}/a_file.txt/out", "--n", "40"], ["cannot write", "a_file.txt"]),
    ("synth-n-too-small", ["data", "synth", "--out", "{bad}/synth_out", "--n", "3"], ["--n"]),
    ("table-out-not-writable", ["table", "--out", "{bad}/a_file.txt/table.md"], ["a_file.txt"]),
    ("plot-out-not-writable", ["plot", "--out", "{bad}/a_file.txt/p.png"], ["a_file.txt"]),
    # --- finetune-teacher
    ("finetune-unknown-alias", ["finetune-teacher", "--model", "resnet9000", "--data", "synthetic:80", "--no-pretrained",
                                "--epochs", "1", "--img-size", "32"], ["unknown model alias", "resnet9000"]),
    ("finetune-malformed-spec", ["finetune-teacher", "--model", "test_resnet", "--data", "imagenet:/x", "--no-pretrained",
                                 "--epochs", "1"], ["malformed dataset spec"]),
    ("finetune-missing-folder", ["finetune-teacher", "--model", "test_resnet", "--data", "neu:{bad}/nowhere",
                                 "--no-pretrained", "--epochs", "1"], ["does not exist"]),
    ("finetune-negative-epochs", ["finetune-teacher", "--model", "test_resnet", "--data", "synthetic:80", "--epochs", "-3"],
     ["--epochs"]),
    ("finetune-zero-batch", ["finetune-teacher", "--model", "test_resnet", "--data", "synthetic:80", "--batch-size", "0"],
     ["--batch-size"]),
    ("finetune-unknown-balance", ["finetune-teacher", "--model", "test_resnet", "--data", "synthetic:80", "--no-pretrained",
                                  "--epochs", "1", "--img-size", "32", "--balance", "magic"], ["balance", "magic"]),
    ("finetune-unknown-amp", ["finetune-teacher", "--model", "test_resnet", "--data", "synthetic:80", "--no-pretrained",
                              "--epochs", "1", "--img-size", "32", "--amp", "int3"], ["amp", "int3"]),
    ("finetune-unknown-device", ["finetune-teacher", "--model", "test_resnet", "--data", "synthetic:80", "--no-pretrained",
                                 "--epochs", "1", "--img-size", "32", "--device", "tpu"], ["device", "tpu"]),
    ("finetune-cuda-absent", ["finetune-teacher", "--model", "test_resnet", "--data", "synthetic:80", "--no-pretrained",
                              "--epochs", "1", "--img-size", "32", "--device", "cuda"], ["cuda", "no CUDA"]),
    ("finetune-weights-missing", ["finetune-teacher", "--model", "test_resnet", "--data", "synthetic:80",
                                  "--weights", "{bad}/nope.safetensors", "--epochs", "1", "--img-size", "32"], ["nope.safetensors"]),
    ("finetune-weights-pickle", ["finetune-teacher", "--model", "test_resnet", "--data", "synthetic:80",
                                 "--weights", "{bad}/evil.pth", "--epochs", "1", "--img-size", "32"], ["evil.pth"]),
    ("finetune-weights-fake-safetensors", ["finetune-teacher", "--model", "test_resnet", "--data", "synthetic:80",
                                           "--weights", "{bad}/evil.safetensors", "--epochs", "1", "--img-size", "32"],
     ["evil.safetensors"]),
    ("finetune-corrupt-images", ["finetune-teacher", "--model", "test_resnet", "--data", "mvtec:{bad}/corrupt",
                                 "--no-pretrained", "--epochs", "1", "--img-size", "32"], ["corrupt", "broken.png"]),
    # --- distill
    ("distill-unknown-teacher-id", ["distill", "--teacher", "4242", "--student", "test_resnet", "--no-pretrained",
                                    "--epochs", "1"], ["4242"]),
    # the teacher is checked before the (new) dataset's row is written
    ("distill-unknown-teacher-id-new-data", ["distill", "--teacher", "4242", "--student", "test_resnet", "--data",
                                             "synthetic:40", "--no-pretrained", "--epochs", "1"], ["4242"]),
    ("distill-teacher-not-ready", ["distill", "--teacher", "{running}", "--student", "test_resnet", "--no-pretrained",
                                   "--epochs", "1"], ["{running}", "running"]),
    ("distill-unknown-student", ["distill", "--teacher", "{teacher}", "--student", "mobilenet_v99", "--no-pretrained",
                                 "--epochs", "1"], ["unknown model alias", "mobilenet_v99"]),
    ("distill-class-count-mismatch", ["distill", "--teacher", "{teacher}", "--student", "test_resnet", "--data",
                                      "{multi_spec}", "--no-pretrained", "--epochs", "1", "--img-size", "32"], ["predicts 2 classes", "has 3"]),
    ("distill-alpha-above-1", ["distill", "--teacher", "{teacher}", "--student", "test_resnet", "--alpha", "1.5"], ["--alpha"]),
    ("distill-negative-epochs", ["distill", "--teacher", "{teacher}", "--student", "test_resnet", "--epochs", "-1"],
     ["--epochs"]),
    ("distill-cuda-absent", ["distill", "--teacher", "{teacher}", "--student", "test_resnet", "--no-pretrained",
                             "--epochs", "1", "--device", "cuda"], ["cuda"]),
    # --- prune
    ("prune-ratio-zero", ["prune", "--id", "{teacher}", "--ratio", "0", "--finetune-epochs", "0"], ["ratio", "0"]),
    ("prune-ratio-one", ["prune", "--id", "{teacher}", "--ratio", "1", "--finetune-epochs", "0"], ["ratio", "1"]),
    ("prune-ratio-negative", ["prune", "--id", "{teacher}", "--ratio", "-0.2", "--finetune-epochs", "0"], ["ratio"]),
    ("prune-ratios-garbage", ["prune", "--id", "{teacher}", "--ratios", "0.2,lots", "--finetune-epochs", "0"], ["lots"]),
    ("prune-ratios-out-of-range", ["prune", "--id", "{teacher}", "--ratios", "0.2,1.4", "--finetune-epochs", "0"], ["1.4"]),
    ("prune-unknown-method", ["prune", "--id", "{teacher}", "--ratio", "0.3", "--method", "chainsaw", "--finetune-epochs", "0"],
     ["method", "chainsaw"]),
    ("prune-unknown-importance", ["prune", "--id", "{teacher}", "--ratio", "0.3", "--importance", "vibes",
                                  "--finetune-epochs", "0"], ["importance", "vibes"]),
    ("prune-unknown-id", ["prune", "--id", "4242", "--ratio", "0.3", "--finetune-epochs", "0"], ["4242"]),
    ("prune-unknown-alias", ["prune", "--id", "resnet9000", "--ratio", "0.3", "--finetune-epochs", "0"], ["resnet9000"]),
    ("prune-negative-epochs", ["prune", "--id", "{teacher}", "--ratio", "0.3", "--finetune-epochs", "-1"], ["epochs"]),
    ("prune-cuda-absent", ["prune", "--id", "{teacher}", "--ratio", "0.3", "--finetune-epochs", "1", "--device", "cuda"],
     ["cuda"]),
    # --- bench
    ("bench-unknown-id", ["bench", "--ids", "4242", "--quick", "--no-memory", "--no-roofline"], ["4242"]),
    ("bench-garbage-ids", ["bench", "--ids", "one,two", "--quick", "--no-memory", "--no-roofline"], ["one"]),
    ("bench-unknown-backend", ["bench", "--ids", "{teacher}", "--backend", "tflite", "--quick", "--no-memory",
                               "--no-roofline"], ["backend", "tflite"]),
    ("bench-unknown-device", ["bench", "--ids", "{teacher}", "--device", "npu", "--quick", "--no-memory", "--no-roofline"],
     ["npu"]),
    ("bench-cuda-absent", ["bench", "--ids", "{teacher}", "--device", "cuda", "--quick", "--no-memory", "--no-roofline"],
     ["cuda"]),
    ("bench-bad-batch-sizes", ["bench", "--ids", "{teacher}", "--batch-sizes", "0,-4", "--quick", "--no-memory",
                               "--no-roofline"], ["batch"]),
    ("bench-target-recall-out-of-range", ["bench", "--ids", "{teacher}", "--target-recall", "1.5", "--quick",
                                          "--no-memory", "--no-roofline"], ["recall"]),
    # --- quantize
    ("quantize-unknown-id", ["quantize", "--id", "4242", "--method", "static"], ["4242"]),
    ("quantize-not-ready", ["quantize", "--id", "{running}", "--method", "static"], ["{running}", "running"]),
    ("quantize-unknown-method", ["quantize", "--id", "{teacher}", "--method", "int1-magic"], ["int1-magic"]),
    ("quantize-unknown-backend", ["quantize", "--id", "{teacher}", "--method", "static", "--backend", "tflite"],
     ["tflite"]),
    ("quantize-fp16-without-cuda", ["quantize", "--id", "{teacher}", "--method", "fp16", "--device", "cuda"], ["cuda"]),
    ("quantize-negative-epochs", ["quantize", "--id", "{teacher}", "--method", "qat", "--epochs", "-2"], ["epochs"]),
    ("quantize-zero-calib-images", ["quantize", "--id", "{teacher}", "--method", "static", "--calib-images", "0"],
     ["calib"]),
    ("quantize-keep-fp-unknown-layer", ["quantize", "--id", "{teacher}", "--method", "static", "--keep-fp",
                                        "no.such.layer"], ["no.such.layer"]),
    ("quantize-recall-drop-out-of-range", ["quantize", "--id", "{teacher}", "--method", "auto", "--max-recall-drop",
                                           "-0.5"], ["recall"]),
    # --- a modified artifact (one flipped bit) is refused by every command that loads it
    ("distill-tampered-teacher", ["distill", "--teacher", "{tampered}", "--student", "test_resnet", "--no-pretrained",
                                  "--epochs", "1", "--img-size", "32"], ["model {tampered}", "sha256"]),
    ("prune-tampered", ["prune", "--id", "{tampered}", "--ratio", "0.3", "--finetune-epochs", "0"],
     ["model {tampered}", "sha256"]),
    ("quantize-tampered", ["quantize", "--id", "{tampered}", "--method", "static"], ["model {tampered}", "sha256"]),
    ("bench-tampered", ["bench", "--ids", "{tampered}", "--quick", "--no-memory", "--no-roofline"],
     ["model {tampered}", "sha256"]),
    # --- report
    ("table-unknown-sort", ["table", "--sort", "vibes"], ["vibes"]),
    ("table-unknown-format", ["table", "--format", "xlsx"], ["xlsx"]),
]

CUDA_CASES = {c[0] for c in CASES if c[0].endswith("cuda-absent") or "without-cuda" in c[0]}


@pytest.mark.skipif(CUDA, reason="a CUDA device is present: 'CUDA requested with none present' cannot be staged")
def test_bench_refuses_an_absent_device_even_with_nothing_to_bench(tmp_path):
    result = run_cli(["bench", "--ids", "all", "--device", "cuda", "--db", str(tmp_path / "empty.sqlite")])
    assert_user_error(result, "cuda", "no CUDA device")


def test_catalogue_is_big_enough():
    assert len(CASES) >= 25
    assert len({c[0] for c in CASES}) == len(CASES)


# Cases whose bad value, if accepted, starts long native work (NNCF/OpenVINO quantization):
# they run in a child process with a deadline, because interrupting native code in-process
# can crash the test session itself.
ISOLATED = {"quantize-recall-drop-out-of-range", "quantize-negative-epochs", "quantize-zero-calib-images"}
DEADLINE_S = 30  # bad input must be refused before any real work


@pytest.mark.parametrize("case_id,argv,needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input(world, case_db, case_id, argv, needles):
    if argv[0] not in _commands():
        pytest.skip(f"command '{argv[0]}' is not in the CLI yet")
    if case_id in CUDA_CASES and CUDA:
        pytest.skip("a CUDA device is present: 'CUDA requested with none present' cannot be staged")
    fill = {"bad": world["bad"], "teacher": world["teacher"], "multi_model": world["multi_model"],
            "running": world["running"], "multi_spec": world["multi_spec"], "tampered": world["tampered"]}
    args = [a.format(**fill) for a in argv]
    other_files = {p: db_state(p) for p in (world["bad"] / "not_sqlite.sqlite", world["bad"] / "newer.sqlite")}
    before = db_state(case_db)
    if case_id in ISOLATED:
        try:
            result = run_cli_subprocess(args, env={"DEFECTOPT_DB": str(case_db)}, timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"not refused within {DEADLINE_S} s: the command started working on bad input")
    else:
        result = run_cli(args)
    assert_user_error(result, *[n.format(**fill) for n in needles])
    assert db_state(case_db) == before, "the failed command changed the DB"
    for path, state in other_files.items():
        assert db_state(path) == state, f"{path.name} was modified"
    assert not (world["bad"] / "PWNED").exists()
    # no artifact was produced or left half-written
    arts = case_db.parent / "base-artifacts"
    assert sorted(p.name for p in arts.iterdir() if p.name.isdigit() or p.name.startswith(".staging")) == sorted(
        str(world[k]) for k in ("teacher", "multi_model", "tampered"))


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "LA", "P"])
def test_unusual_image_modes_are_not_errors(case_db, tmp_path, mode):
    """Grayscale / RGBA / 16-bit / palette images are valid input: the dataset registers."""
    root = tmp_path / f"modes_{mode.replace(';', '')}"
    for i in range(4):
        write_image(root / "good" / f"g{i}.png", mode)
        write_image(root / "dent" / f"d{i}.png", mode)
    res = run_cli(["data", "info", f"folder:{root}"])
    assert res.code == 0, res.stderr
    assert db_state(case_db)["counts"]["datasets"] == 3


def test_catalogue_case_in_a_real_shell(world, case_db):
    """The catalogue runs in-process for speed; one case through the console script proves the
    shell sees the same: exit status 2, one line, no traceback (rich tracebacks included)."""
    proc = subprocess.run([sys.executable, "-m", "defectopt", "data", "info", f"mvtec:{world['bad']}/corrupt"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "broken.png" in proc.stderr
