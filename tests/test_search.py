"""`defectopt search`: the early-stopping rule, the space file, and small real searches on the
synthetic data with tiny timm architectures (answer on the val front, test split untouched
until the confirmation, stopped trials recorded, resume after SIGKILL)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_ready_model
from defectopt.errors import DefectoptError
from defectopt.search.early_stop import Curve, decide
from defectopt.search.options import SearchOptions, SearchSpace, load_space, parse_duration

SPACE = """
[space]
students = ["test_resnet", "test_efficientnet"]
img_sizes = [32]
alphas = [0.0, 0.5]
temperatures = [4.0]
prune_ratios = [0.0, 0.5]
quantize = ["none", "static"]
backends = ["openvino"]
keep_fp = [0, 1]
epochs = 3
lr = 5e-3
prune_finetune_epochs = 1
calib_images = 16
"""
FAST = dict(min_iters=3, min_time=0.0, startup_trials=2)


def _space(tmp_path: Path, text: str = SPACE) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(text)
    return path


# --- the rule and the options (no training) ---------------------------------------------------

def test_early_stop_rule_uses_the_best_recovery_seen():
    curves = [Curve("trial 0", (0.50, 0.70, 0.90)), Curve("trial 1", (0.80, 0.85, 0.86))]
    assert not decide(0.10, 1, 3, 0.95, curves[:1]).stop, "one curve is too little evidence by default"
    assert decide(0.10, 1, 3, 0.95, curves[:1], min_curves=1).stop
    # after epoch 1 the most any run gained is 0.40 (trial 0): 0.55 is 0.40 short of 0.95 -> keep going
    assert not decide(0.55, 1, 3, 0.95, curves).stop
    d = decide(0.50, 1, 3, 0.95, curves)  # 0.45 short > 0.40
    assert d.stop and "trial 0" in d.reason and "0.400" in d.reason
    # after epoch 2 the best gain is 0.20: 0.70 is 0.25 short
    assert decide(0.70, 2, 3, 0.95, curves).stop
    assert not decide(0.10, 3, 3, 0.95, curves).stop, "the last epoch is never stopped"
    assert not decide(0.10, 1, 3, 0.95, []).stop, "nothing known yet: nothing stopped"
    assert not decide(0.10, 4, 6, 0.95, curves).stop, "no curve that long: no evidence"


def test_plans_map_to_entry_point_options(tmp_path):
    from defectopt.search.space import Plan, prune_step, quantize_step, student_step

    space, opts = load_space(_space(tmp_path)), SearchOptions(teacher="1", min_recall=0.9, seed=5)
    plan = Plan("test_resnet", 32, 0.5, 4.0, 0.5, "static", "onnxruntime", 1)
    distill = student_step(plan, space, opts, teacher_id=7).options
    assert (distill.model, distill.img_size, distill.teacher, distill.train.alpha, distill.train.epochs,
            distill.train.seed) == ("test_resnet", 32, "7", 0.5, 3, 5)
    prune = prune_step(plan, space, opts, student_id=8, teacher_id=7).options
    assert prune.ratios == (0.5,) and prune.kd_from == "7" and prune.model == "8"
    quant = quantize_step(plan, space, opts, parent_id=9, teacher_id=7).options
    # keep-fp N names "the N most sensitive layers": the ranking must be asked for
    assert (quant.method, quant.backend, quant.keep_fp, quant.sensitivity) == ("static", "onnxruntime", "1", True)
    no_kd = Plan("test_resnet", 32, 0.0, None, 0.5, "qat", "openvino", 0)
    assert prune_step(no_kd, space, opts, 8, 7).options.kd_from is None
    assert quantize_step(no_kd, space, opts, 9, 7).options.qat.kd_from is None
    # equal plans give equal step keys (reuse); another student setting does not
    from defectopt.steps import step_key

    assert step_key(student_step(plan, space, opts, 7)) == step_key(student_step(dataclasses.replace(plan, prune_ratio=0.0), space, opts, 7))
    assert step_key(student_step(plan, space, opts, 7)) != step_key(student_step(no_kd, space, opts, 7))


def test_space_file_options_and_durations(tmp_path):
    space = load_space(_space(tmp_path))
    assert space.students == ("test_resnet", "test_efficientnet") and space.epochs == 3
    assert space.qat_epochs == SearchSpace.qat_epochs, "fields the file leaves out keep their defaults"
    assert load_space(None) == SearchSpace()
    with pytest.raises(DefectoptError, match="unknown option 'ratios'"):
        load_space(_space(tmp_path, "[space]\nratios = [0.5]\n"))
    with pytest.raises(DefectoptError, match="prune_ratios"):
        SearchOptions(teacher="1", min_recall=0.9, space=SearchSpace(prune_ratios=(1.0,))).validate()
    with pytest.raises(DefectoptError, match="unknown model alias|not a known|no_such"):
        SearchOptions(teacher="1", min_recall=0.9, space=SearchSpace(students=("no_such",))).validate()
    with pytest.raises(DefectoptError, match="min-recall"):
        SearchOptions(teacher="1", min_recall=1.5).validate()
    with pytest.raises(DefectoptError, match="objectives"):
        SearchOptions(teacher="1", min_recall=0.9, objectives=("latency", "recall")).validate()
    assert parse_duration("90m") == 5400 and parse_duration("1h30m") == 5400 and parse_duration("45") == 45
    for bad in ("", "abc", "0", "-5m"):
        with pytest.raises(DefectoptError, match="--time"):
            parse_duration(bad)
    assert SearchOptions(teacher="1", min_recall=0.9).max_trials == SearchOptions.DEFAULT_TRIALS
    assert SearchOptions(teacher="1", min_recall=0.9, time_budget=60).max_trials is None


def test_search_cli_refuses_bad_input_before_writing(tmp_path, db_path):
    from defectopt.cli import main

    for argv, message in (
        (["--teacher", "1", "--min-recall", "2"], "min-recall"),
        (["--teacher", "1", "--min-recall", "0.9", "--time", "soon"], "--time"),
        (["--teacher", "1", "--min-recall", "0.9", "--name", "a", "--resume", "a"], "not both"),
        (["--teacher", "1", "--min-recall", "0.9", "--space", str(tmp_path / "none.toml")], "not found"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["search", *argv])
        assert exc.value.code == 2, argv
    assert not db_path.exists(), "bad options must not create the store"


# --- real searches (tiny models, synthetic data) ----------------------------------------------

@pytest.fixture
def teacher(store, tmp_path):
    """A tiny teacher on an easy two-class folder dataset (bright image = defect), so that tiny
    students reach a real val recall in two epochs and the floor separates trials."""
    import numpy as np
    from PIL import Image

    from defectopt.data.catalog import resolve_dataset

    rng = np.random.default_rng(0)
    root = tmp_path / "easy"
    for cls in ("good", "stripe"):
        (root / cls).mkdir(parents=True)
        for i in range(60):
            low = 150 if cls == "stripe" else 0  # defects are bright: any model separates them at once
            img = rng.integers(low, low + 100, (32, 32, 3), dtype=np.uint8)
            row = int(rng.integers(4, 28))
            img[row:row + 4] = 255 if cls == "stripe" else 0
            Image.fromarray(img).save(root / cls / f"{i}.png")
    return make_ready_model(store, "test_resnet", resolve_dataset(store, f"folder:{root}"))


def test_search_answer_is_on_the_val_front_and_test_is_read_only_at_confirmation(store, teacher, tmp_path, monkeypatch):
    from optuna.trial import TrialState
    from sqlalchemy import select

    from defectopt.data.catalog import DatasetInfo
    from defectopt.search import api
    from defectopt.store.schema import Model

    reads: list[tuple[str, str]] = []
    phase = ["trials"]
    original = DatasetInfo.split

    def spy(self, name):
        reads.append((phase[0], name))
        return original(self, name)

    monkeypatch.setattr(DatasetInfo, "split", spy)
    real_confirm = api._Search.confirm

    def confirm(self, front, outcome):
        phase[0] = "confirm"
        return real_confirm(self, front, outcome)

    monkeypatch.setattr(api._Search, "confirm", confirm)
    opts = SearchOptions(teacher=str(teacher), min_recall=0.5, trials=4, space=load_space(_space(tmp_path)),
                         out=str(tmp_path / "out"), quiet=True, compare=(str(teacher),), **FAST)
    seen = []
    outcome = api.run_search(store, opts, echo=lambda _m: None, on_trial=seen.append)

    assert [r.state for r in seen if r.state != "running"] and len(outcome.trials) == 4
    assert ("trials", "test") not in reads, "the test split was read before the final confirmation"
    assert ("trials", "val") in reads and ("confirm", "test") in reads
    front_ids = {(r.model_id) for r in outcome.front}
    assert outcome.front and front_ids == {c.model_id for c in outcome.confirmed}
    # the answer is the fastest confirmed model whose test recall CI lower bound clears the floor
    ok = [c for c in outcome.confirmed if c.test_recall_ci_low >= opts.min_recall]
    assert ok, [(c.plan, c.val_recall, c.test_recall, c.test_recall_ci_low) for c in outcome.confirmed]
    assert outcome.answer is not None and outcome.answer.model_id in front_ids
    # ranked by the interleaved timing of the confirmed set and the --compare model (the teacher)
    assert outcome.interleaved is not None and all(c.interleaved_ms for c in outcome.confirmed)
    assert outcome.answer.interleaved_ms == min(c.interleaved_ms for c in ok)
    assert [(r.model_id, r.backend) for r in outcome.references] == [(teacher, "torch")]
    assert outcome.references[0].test_recall is not None, "a reference is measured on test like the rest"
    assert f"model {outcome.answer.model_id}" in outcome.answer_line
    assert f"vs model {teacher} [torch]" in outcome.answer_line and "interleaved" in outcome.answer_line
    assert outcome.plot is not None and outcome.plot.read_bytes()[:4] == b"\x89PNG"
    import csv

    rows = list(csv.DictReader(outcome.trials_csv.open()))
    assert [int(r["trial"]) for r in rows] == [0, 1, 2, 3] and {"student", "prune_ratio", "val_recall"} <= set(rows[0])
    # no front member is dominated by a feasible trial on the val objectives
    import optuna

    study = optuna.load_study(study_name=outcome.name, storage=f"sqlite:///{outcome.storage}")
    feasible = [t for t in study.trials if t.state == TrialState.COMPLETE and t.user_attrs["feasible"]]
    for r in outcome.front:
        assert not any(t.values[0] >= r.recall and t.values[1] < r.latency_ms for t in feasible)
    # every trial's model is an ordinary row whose lineage reaches the teacher
    with store.session() as s:
        rows = {m.id: m for m in s.scalars(select(Model))}
    for r in outcome.trials:
        if r.model_id is None:
            continue
        node = rows[r.model_id]
        while node.parent_id is not None and node.id != teacher:
            node = rows[node.parent_id]
        assert node.id == teacher
    assert any(r.reused for r in outcome.trials), "a later trial should reuse an earlier trial's student"
    # a second search on the same DB reuses every step it can and needs a new name
    with pytest.raises(DefectoptError, match="already exists"):
        api.run_search(store, opts, echo=lambda _m: None)


def test_search_stops_hopeless_students_and_records_why(store, synthetic, tmp_path):
    from sqlalchemy import select

    from defectopt.search.api import run_search
    from defectopt.store.schema import Model, ModelStatus

    # on the (hard at 32 px) synthetic data the floor 1.0 is out of reach: once one curve is known,
    # a student below the floor by more than that curve ever recovered is stopped after epoch 1
    teacher = make_ready_model(store, "test_resnet", synthetic)
    space = dataclasses.replace(load_space(_space(tmp_path)), prune_ratios=(0.0,), quantize=("none",), epochs=3)
    opts = SearchOptions(teacher=str(teacher), min_recall=1.0, trials=4, space=space, confirm=False, quiet=True,
                         seed=3, early_stop_min_curves=1, **FAST)
    outcome = run_search(store, opts, echo=lambda _m: None)
    pruned = [r for r in outcome.trials if r.state == "pruned"]
    assert pruned, [(r.state, r.plan, r.recall) for r in outcome.trials]
    assert all("below the floor" in r.note or "were stopped in trial" in r.note for r in pruned)
    assert not outcome.front and "no trial reached" in outcome.answer_line
    with store.session() as s:
        failed = s.scalars(select(Model).where(Model.status == ModelStatus.FAILED)).all()
    assert any("search stopped this run early" in (m.config or {}).get("failure", "") for m in failed)


def _raw_states(storage: Path) -> list[str]:
    import sqlite3

    if not storage.exists():
        return []
    try:
        with sqlite3.connect(f"file:{storage}?mode=ro", uri=True, timeout=1) as conn:
            # a RUNNING trial counts once its plan is sampled (the retry then has its parameters)
            return [r[0] for r in conn.execute(
                "SELECT state FROM trials t WHERE state != 'RUNNING' OR EXISTS (SELECT 1 FROM trial_user_attributes a "
                "WHERE a.trial_id = t.trial_id AND a.key = 'plan')")]
    except sqlite3.Error:
        return []


def _trial_states(storage: Path, name: str):
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=f"sqlite:///{storage}").trials
    except (KeyError, Exception):
        return []


def test_search_resumes_after_sigkill_without_repeating_finished_trials(store, teacher, tmp_path, db_path):
    from optuna.trial import TrialState

    from defectopt.search.api import run_search, storage_path

    space_file = _space(tmp_path)
    name = "killed"
    cmd = [sys.executable, "-m", "defectopt", "search", "--teacher", str(teacher), "--min-recall", "0.01",
           "--trials", "4", "--space", str(space_file), "--name", name, "--min-iters", "3", "--min-time", "0",
           "--startup-trials", "2", "--no-confirm", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    storage = storage_path(store)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            states = _raw_states(storage)  # plain reads: Optuna would race the child creating its schema
            if {"COMPLETE", "PRUNED"} & set(states) and "RUNNING" in states:
                break
            if proc.poll() is not None:
                pytest.fail(f"the search ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        else:
            pytest.fail("no finished trial within 240 s")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    before = {t.number: (t.state, t.values, t.user_attrs.get("model_id"))
              for t in _trial_states(storage, name) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    assert before

    opts = SearchOptions(teacher=str(teacher), min_recall=0.01, trials=4, space=load_space(space_file), name=name,
                         resume=True, confirm=False, quiet=True, **FAST)
    lines: list[str] = []
    outcome = run_search(store, opts, echo=lines.append)
    assert any("interrupted trial(s) failed and queued again" in line for line in lines)
    trials = _trial_states(storage, name)
    for t in trials:  # the trials finished before the kill are untouched
        if t.number in before:
            assert (t.state, t.values, t.user_attrs.get("model_id")) == before[t.number]
    interrupted = [t for t in trials if t.user_attrs.get("interrupted")]
    assert len(interrupted) == 1 and interrupted[0].state == TrialState.FAIL
    retried = [t for t in trials if t.user_attrs.get("retry_of") == interrupted[0].number]
    assert len(retried) == 1 and retried[0].params == interrupted[0].params
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
                and not t.user_attrs.get("interrupted")]
    assert len(finished) == 4 and outcome.ran == 4 - len(before)
    # the killed process's unfinished model rows are failed, not left 'running'
    from defectopt.models.artifacts import stale_rows

    assert not stale_rows(store)
