"""`defectopt pipeline`: config loading, step keys and resuming, and a real minimal study."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from defectopt.errors import DefectoptError
from defectopt.pipeline import BUNDLED, STEP_KEY, Step, Study, load_config, step_key, validate_config
from fixtures.clihelp import assert_user_error, run_cli

REPO = Path(__file__).resolve().parents[1]


def test_bundled_configs_load_and_are_the_top_level_files():
    assert sorted(p.stem for p in (REPO / "configs").glob("*.toml")) == sorted(BUNDLED)
    for name in BUNDLED:
        cfg, origin = load_config(None if name == "default" else name)
        assert cfg["study"]["data"] and cfg["teacher"]["model"]
    assert not (REPO / "src" / "defectopt" / "configs").exists(), "one copy of each config: configs/ at the top level"
    default, _ = load_config(None)
    assert default["study"]["pretrained"] is False  # the offline-safe default
    assert default["study"]["data"].startswith("synthetic")


def test_config_errors_are_one_line_user_errors(tmp_path, db_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[study]\ndata = "synthetic:80"\n[teacher]\nmodel = "test_resnet"\nepochs = 1\nepoch = 2\n')
    assert_user_error(run_cli(["pipeline", str(bad)]), "unknown key(s) epoch in [teacher]")
    bad.write_text('[study]\ndata = "synthetic:80"\n')
    assert_user_error(run_cli(["pipeline", str(bad)]), "[teacher] model")
    bad.write_text('[study\n')
    assert_user_error(run_cli(["pipeline", str(bad)]), "not valid TOML")
    bad.write_text('[study]\ndata = "synthetic:80"\n[teacher]\nmodel = "x"\n[prune]\nfrom = ["students2"]\n')
    assert_user_error(run_cli(["pipeline", str(bad)]), "from")
    assert_user_error(run_cli(["pipeline", str(tmp_path / "missing.toml")]), "not found")
    assert not db_path.exists()  # nothing was opened or written


def test_show_config_prints_the_bundled_default():
    res = run_cli(["pipeline", "--show-config"])
    assert res.code == 0 and 'data = "synthetic:400"' in res.stdout


def test_step_key_depends_on_the_options_only():
    from defectopt.compress.prune.options import PruneOptions

    a = step_key(Step("prune", "prune", PruneOptions(model="3")))
    assert a == step_key(Step("prune", "prune", PruneOptions(model="3", quiet=True))) and a.endswith(":prune")
    assert a != step_key(Step("prune", "prune", PruneOptions(model="3", ratios=(0.4,))))


def test_an_option_added_later_keeps_older_study_dbs_resumable():
    """`d34a8efb9b84:quantize model 2 auto` is the key that sessions 25-30 recorded for the NEU
    study's `auto` step (benchmarks/results/study-neu-det-*/models.csv); `auto_evidence`, added
    after them, must not change it at "point" (what those steps computed), and must change it at
    any other value, the new default included (those steps chose by another rule)."""
    import dataclasses

    from defectopt.compress.quantize.options import QuantizeOptions
    from defectopt.options import build

    opts = build(QuantizeOptions, {"model": "2", "method": "auto", "seed": 0, "qat": {"seed": 0, "quiet": True},
                                   "max_recall_drop": 0.01, "auto-evidence": "point"})
    assert step_key(Step("quantize model 2 auto", "quantize", opts)) == "d34a8efb9b84:quantize model 2 auto"
    for other in ("new-misses", "bound"):
        changed = dataclasses.replace(opts, auto_evidence=other)
        assert step_key(Step("quantize model 2 auto", "quantize", changed)) != "d34a8efb9b84:quantize model 2 auto"
    assert QuantizeOptions().auto_evidence == "new-misses"


def test_options_are_built_from_toml_keys_without_re_spelling_flags():
    from defectopt.bench.options import BenchOptions
    from defectopt.compress.quantize.options import QuantizeOptions
    from defectopt.options import build, describe
    from defectopt.train.options import RunRequest

    req = build(RunRequest, {"command": "distill", "model": "m", "lr": 0.01, "warmup-epochs": 0.5, "workers": 2})
    assert req.lr == 0.01 and req.train.warmup_epochs == 0.5 and req.train.workers == 2
    q = build(QuantizeOptions, {"model": "3", "epochs": 2, "qat": {"seed": 4}})
    assert q.qat.epochs == 2 and q.qat.seed == 4 and q.seed == 0
    b = build(BenchOptions, {"vs-parent": True, "bootstrap": 50, "quick": True})
    assert b.vs_parent and b.n_boot == 50 and b.timing.min_iters < BenchOptions().timing.min_iters
    assert describe(b) == "quick=True bootstrap=50 vs_parent=True"
    with pytest.raises(DefectoptError, match="unknown option 'epoch'.*epochs"):
        build(RunRequest, {"command": "finetune", "model": "m", "epoch": 3}, "here")


def minimal_config(tmp_path: Path, **over) -> Path:
    text = f"""
[study]
name = "mini"
data = "synthetic:80"
img_size = 32
device = "cpu"
out = "{(tmp_path / 'out').as_posix()}"

[teacher]
model = "test_resnet"
epochs = 1
batch_size = 16

[[students]]
model = "test_vit"
alphas = [0.5, 0.0]
epochs = 1
batch_size = 16

[prune]
from = ["kd"]
ratios = [0.5]
finetune_epochs = {over.get("finetune_epochs", 1)}

[quantize]
from = ["prune"]
methods = ["dynamic"]

[bench]
devices = ["cpu"]
batch_sizes = [1]
quick = true
options = {{ memory = false, roofline = false, bootstrap = 50 }}

[report]
min_recall = 0.0
"""
    path = tmp_path / "mini.toml"
    path.write_text(text)
    return path


class FakeSteps:
    """Stands in for the entry points: each model-producing step registers one ready model."""

    KINDS = {"finetune": "finetune-teacher", "distill": "distill", "prune": "prune", "quantize": "quantize", "bench": "bench"}

    def __init__(self, store):
        self.store, self.calls, self.steps = store, [], []

    def __call__(self, step):
        from conftest import make_ready_model

        self.calls.append(self.KINDS[step.kind])
        self.steps.append(step)
        if step.kind == "bench":
            return 0
        opts = step.options
        parent = getattr(opts, "teacher", None) if step.kind == "distill" else getattr(opts, "model", None)
        parent = int(parent) if step.kind not in ("finetune",) and parent else None
        return [make_ready_model(self.store, "test_resnet", parent_id=parent, technique=self.KINDS[step.kind])]


def test_rerun_skips_finished_steps_and_resumes_after_a_failure(store, tmp_path):
    cfg = load_config(minimal_config(tmp_path))[0]
    fake = FakeSteps(store)
    first = Study(store, cfg, echo=lambda _: None, executor=fake).run()
    assert fake.calls == ["finetune-teacher", "distill", "distill", "prune", "quantize", "bench"]
    assert len(first.model_ids) == 5
    fake.calls.clear()
    again = Study(store, cfg, echo=lambda _: None, executor=fake).run()
    assert fake.calls == ["bench"]  # bench itself skips what is measured
    assert again.model_ids == first.model_ids
    assert all(s.status == "skipped" for s in again.steps if not s.name.startswith("bench"))
    # a changed prune ratio re-runs prune and what depends on it, nothing above
    cfg2 = validate_config({**load_tomllib(minimal_config(tmp_path)), "prune": {"from": ["kd"], "ratios": [0.25]}})
    fake.calls.clear()
    Study(store, cfg2, echo=lambda _: None, executor=fake).run()
    assert fake.calls == ["prune", "quantize", "bench"]

    def failing(step):
        if step.kind == "quantize":
            raise DefectoptError("boom")
        return fake(step)

    cfg3 = validate_config({**load_tomllib(minimal_config(tmp_path)), "prune": {"from": ["kd"], "ratios": [0.75]}})
    fake.calls.clear()
    with pytest.raises(DefectoptError, match="pipeline step 'quantize model .* dynamic' failed: boom"):
        Study(store, cfg3, echo=lambda _: None, executor=failing).run()
    assert fake.calls == ["prune"]
    fake.calls.clear()
    Study(store, cfg3, echo=lambda _: None, executor=fake).run()
    assert fake.calls == ["quantize", "bench"]  # resumed: the prune step is not redone


def test_references_and_seed_repeats_are_trained_and_benched_but_not_built_on(store, tmp_path):
    raw = load_tomllib(minimal_config(tmp_path))
    raw["teacher"]["repeat_seeds"] = [1, 2]
    raw["references"] = [{"model": "test_vit", "epochs": 1, "img_size": 32}]
    raw["students"][0]["repeat_seeds"] = [1]
    cfg = validate_config(raw)
    fake = FakeSteps(store)
    result = Study(store, cfg, echo=lambda _: None, executor=fake).run()
    # teacher x3 seeds, reference x1, students 2 alphas x 2 seeds, then prune + quantize of the main KD run only
    assert fake.calls == ["finetune-teacher"] * 4 + ["distill"] * 4 + ["prune", "quantize", "bench"]
    seeds = [s.options.train.seed for s in fake.steps if s.kind == "finetune"]
    assert seeds == [0, 1, 2, 0]
    teacher = result.model_ids[0]
    assert all(s.options.teacher == str(teacher) for s in fake.steps if s.kind == "distill")
    bench = next(s for s in fake.steps if s.kind == "bench")
    assert len(bench.options.ids.split(",")) == 10  # every model is benched
    # prune only the sources of the named aliases (the fake registers every model as test_resnet)
    fake.calls.clear()
    only_other = validate_config({**raw, "prune": {"from": ["kd"], "ratios": [0.4], "models": ["test_vit"]}})
    Study(store, only_other, echo=lambda _: None, executor=fake).run()
    assert "prune" not in fake.calls
    fake.calls.clear()
    only_this = validate_config({**raw, "prune": {"from": ["kd"], "ratios": [0.4], "models": "test_resnet"}})
    Study(store, only_this, echo=lambda _: None, executor=fake).run()
    assert fake.calls.count("prune") == 1
    raw["teacher"]["repeat_seeds"] = "1"
    with pytest.raises(DefectoptError, match="repeat_seeds"):
        validate_config(raw)
    raw["teacher"]["repeat_seeds"] = []
    raw["references"] = [{"epochs": 1}]
    with pytest.raises(DefectoptError, match=r"\[\[references\]\] #1 needs model"):
        validate_config(raw)


def load_tomllib(path):
    import tomllib

    return tomllib.loads(Path(path).read_text())


@pytest.mark.slow
def test_repeated_prune_recipes_size_filters_and_a_second_size_of_one_student(store, tmp_path):
    raw = load_tomllib(minimal_config(tmp_path))
    raw["students"].append({"model": "test_vit", "img_size": 48, "alphas": [0.5], "epochs": 1})
    # two recovery recipes for the same cut; the fake registers every model at 32 px
    raw["prune"] = [{"from": ["kd"], "ratios": [0.5], "models": ["test_resnet@32"]},
                    {"from": ["kd"], "ratios": [0.5], "models": ["test_resnet@32"], "finetune_epochs": 3,
                     "options": {"lr": 5e-4}},
                    {"from": ["kd"], "ratios": [0.3], "models": ["test_resnet@48"]}]
    cfg = validate_config(raw)
    fake = FakeSteps(store)
    Study(store, cfg, echo=lambda _: None, executor=fake).run()
    names = [s.name for s in fake.steps if s.kind in ("distill", "prune")]
    kd = [s for s in fake.steps if s.kind == "distill"]
    assert names[:3] == ["student test_vit [KD α0.5]", "student test_vit [no-KD]", "student test_vit at 48 px [KD α0.5]"]
    assert [s.options.img_size for s in kd] == [32, 32, 48]
    prunes = [s for s in fake.steps if s.kind == "prune"]
    # both KD students (two sizes) x the two @32 recipes; the @48 filter matches no model
    assert len(prunes) == 4
    assert [p.options.finetune_epochs for p in prunes] == [2, 2, 3, 3] and prunes[2].options.lr == 5e-4
    assert prunes[2].name.endswith("ratio 0.5 (recovery 3 ep, lr 0.0005)") and prunes[0].name.endswith("ratio 0.5")
    assert len({step_key(p) for p in prunes}) == 4
    fake.calls.clear()
    Study(store, cfg, echo=lambda _: None, executor=fake).run()
    assert fake.calls == ["bench"]  # every recipe's step resumes by its own key
    # a single [prune] table still works, and a missing one means one table of defaults
    assert len(validate_config({**raw, "prune": {"ratios": [0.4]}})["prune"]) == 1
    assert validate_config({k: v for k, v in raw.items() if k != "prune"})["prune"][0]["ratios"] == [0.5]
    with pytest.raises(DefectoptError, match=r"models entry 'test_resnet@big' is not ALIAS or ALIAS@SIZE"):
        validate_config({**raw, "prune": {"models": ["test_resnet@big"]}})


def test_real_minimal_pipeline_reruns_without_redoing_steps(db_path, tmp_path):
    from defectopt.store.db import open_store, table_counts

    cfg = minimal_config(tmp_path)
    first = run_cli(["pipeline", str(cfg), "--quiet"])
    assert first.code == 0, first.stdout[-3000:] + first.stderr
    out = " ".join(first.stdout.split())
    assert "Pareto frontier" in out and "test_resnet" in out
    report = tmp_path / "out" / "report.md"
    assert report.is_file() and (tmp_path / "out" / "pareto-cpu.png").is_file()
    text = report.read_text()
    assert "test_resnet → test_vit[KD α0.5] → prune0.5" in text and "### Deltas per technique" in text
    store = open_store(db_path)
    counts = table_counts(store)
    from sqlalchemy import select

    from defectopt.store.schema import Model

    with store.session() as s:
        tags = [m.config.get(STEP_KEY) for m in s.scalars(select(Model).where(Model.status == "ready"))]
    assert len(tags) >= 5 and all(tags)

    second = run_cli(["pipeline", str(cfg), "--quiet"])
    assert second.code == 0, second.stdout[-3000:] + second.stderr
    assert len(re.findall(r"skipped, already done", second.stdout)) == 5
    assert table_counts(store)["models"] == counts["models"]
    assert table_counts(store)["measurements"] == counts["measurements"]


def test_stages_run_in_parts_and_plan_lists_what_is_left(store, tmp_path):
    from defectopt.pipeline import STAGES, select_stages

    raw = load_tomllib(minimal_config(tmp_path))
    raw["references"] = [{"model": "test_vit", "epochs": 1, "img_size": 32}]
    cfg = validate_config(raw)
    fake = FakeSteps(store)
    # nothing done yet: a plan runs nothing and lists the top of each chain as pending
    plan = Study(store, cfg, echo=lambda _: None, executor=fake, stages=frozenset()).run()
    assert fake.calls == [] and plan.model_ids == [] and plan.outputs == {}
    assert [s.name for s in plan.pending] == ["teacher test_resnet", "reference test_vit", "student test_vit [KD α0.5]",
                                              "student test_vit [no-KD]", "bench", "report"]
    assert plan.pending[2].message == "needs the teacher, not trained yet"
    # the chain without the reference, then the reference alone: the same steps as one full run
    part = Study(store, cfg, echo=lambda _: None, executor=fake, stages=select_stages(skip="references,bench")).run()
    assert fake.calls == ["finetune-teacher", "distill", "distill", "prune", "quantize"]
    assert [s.name for s in part.pending] == ["reference test_vit", "bench"]
    assert part.outputs == {}  # nothing benched yet: no table
    fake.calls.clear()
    Study(store, cfg, echo=lambda _: None, executor=fake, stages=select_stages(only=["references", "quantize"])).run()
    assert fake.calls == ["finetune-teacher"]  # the reference; quantize of the pruned student was already done
    fake.calls.clear()
    done = Study(store, cfg, echo=lambda _: None, executor=fake, stages=select_stages(only=["bench"])).run()
    assert fake.calls == ["bench"] and done.pending[-1].name == "report"
    assert len(next(s for s in fake.steps if s.kind == "bench").options.ids.split(",")) == 6  # every found model
    fake.calls.clear()
    full = Study(store, cfg, echo=lambda _: None, executor=fake).run()
    assert fake.calls == ["bench"] and not full.pending
    assert select_stages() == frozenset(STAGES)
    for bad, match in (({"only": "students,distill"}, r"--only: unknown stage\(s\) distill; stages: teacher, references"),
                       ({"only": "bench", "skip": "report"}, "not both"), ({"skip": [","]}, "--skip needs at least one")):
        with pytest.raises(DefectoptError, match=match):
            select_stages(**bad)


def test_pipeline_stage_flags_are_one_line_errors(tmp_path, db_path):
    cfg = minimal_config(tmp_path)
    for args, text in ((["--only", "nope"], "unknown stage(s) nope"), (["--plan", "--skip", "bench"], "--plan runs no stage"),
                       (["--only", "bench", "--skip", "report"], "not both")):
        assert_user_error(run_cli(["pipeline", str(cfg), *args]), text)
    assert not db_path.exists()  # refused before the store is opened
    plan = run_cli(["pipeline", str(cfg), "--plan"])
    assert plan.code == 0 and "does not exist: no step of 'mini' has run" in plan.stdout, plan
    assert not db_path.exists()  # a plan does not create the store
