"""The training engine and the finetune-teacher / distill commands, on tiny models (img 32-48)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sqlalchemy import select
from typer.testing import CliRunner

from defectopt.cli import app
from defectopt.errors import DefectoptError

TINY = ["--epochs", "2", "--batch-size", "16", "--no-pretrained", "--device", "cpu", "--quiet"]


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _model_rows(store):
    from defectopt.store.schema import Model

    with store.session() as s:
        return [(r.id, r.alias, r.status, r.parent_id) for r in s.scalars(select(Model).order_by(Model.id))]


def _epoch_rows(store, model_id):
    from defectopt.store.schema import TrainEpoch

    with store.session() as s:
        rows = s.scalars(select(TrainEpoch).where(TrainEpoch.model_id == model_id).order_by(TrainEpoch.epoch)).all()
        return [(r.epoch, r.train_loss, r.val_recall, r.val_precision, r.val_f1, r.lr) for r in rows]


def _weights(store, model_id):
    from safetensors.torch import load_file

    from defectopt.models.artifacts import load_artifact

    return load_file(str(load_artifact(store, model_id).file("model.safetensors")))


# --- engine units ------------------------------------------------------------------------------

def test_selection_never_prefers_a_flag_everything_epoch():
    from defectopt.train.engine import constant_predictor_f1, selection_key

    labels = np.array([1] * 4 + [0] * 6)
    trivial = constant_predictor_f1(labels, "binary", 2)
    assert trivial == pytest.approx(2 * 0.4 / 1.4)  # all-defect: precision 0.4, recall 1
    degenerate = {"recall": 1.0, "f1": trivial}
    good = {"recall": 0.75, "f1": 0.857}
    better_recall = {"recall": 1.0, "f1": 0.889}
    assert selection_key(good, trivial) > selection_key(degenerate, trivial)
    assert selection_key(better_recall, trivial) > selection_key(good, trivial)
    # ties on recall are broken by F1
    assert selection_key({"recall": 0.75, "f1": 0.9}, trivial) > selection_key(good, trivial)
    # when nothing clears the gate, the best F1 wins (not the best recall)
    assert selection_key({"recall": 0.5, "f1": 0.6}, trivial) > selection_key(degenerate, trivial)


def test_warmup_then_cosine_schedule():
    from defectopt.train.engine import warmup_cosine

    f = warmup_cosine(total_steps=10, warmup_steps=2, min_ratio=0.1)
    assert f(0) == pytest.approx(0.5) and f(1) == pytest.approx(1.0)
    assert f(2) == pytest.approx(1.0)
    values = [f(s) for s in range(2, 11)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert f(10) == pytest.approx(0.1)


def test_epoch_sampler_splits_ranks_and_balances_classes():
    from defectopt.train.engine import EpochSampler

    a = EpochSampler(11, seed=3, rank=0, world_size=2)
    b = EpochSampler(11, seed=3, rank=1, world_size=2)
    assert len(a) == len(b) == 6
    assert set(a) | set(b) == set(range(11))
    a.set_epoch(1)
    assert list(a) != list(EpochSampler(11, seed=3, rank=0, world_size=2))  # order changes per epoch
    labels = torch.tensor([0] * 90 + [1] * 10)
    from defectopt.train.losses import class_balanced_weights

    w = class_balanced_weights(labels, 2)[labels]
    drawn = labels[list(EpochSampler(100, seed=0, weights=w))]
    assert 0.3 < drawn.float().mean().item() < 0.7  # ~50 % minority class instead of 10 %


def _tiny(alias, ds, size, seed=0):
    from defectopt.data.loading import resolve_model_data_config
    from defectopt.models.factory import create

    torch.manual_seed(seed)
    model = create(alias, ds.num_classes, size)
    return model, resolve_model_data_config(model, size)


def test_teacher_and_student_see_their_own_view_and_the_teacher_is_frozen(store, synthetic, tmp_path):
    from defectopt.train.engine import TrainConfig, train_model

    student, s_cfg = _tiny("test_convnext", synthetic, 48)
    teacher, t_cfg = _tiny("test_vit", synthetic, 32, seed=1)
    t_cfg["mean"], t_cfg["std"] = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    seen = {"teacher": set(), "student": set()}
    teacher.register_forward_pre_hook(lambda m, a: seen["teacher"].add(tuple(a[0].shape[1:])))
    student.register_forward_pre_hook(lambda m, a: seen["student"].add(tuple(a[0].shape[1:])))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    cfg = TrainConfig(epochs=1, batch_size=16, alpha=0.5, device="cpu", quiet=True)
    result = train_model(store, model_id=None, model=student, dataset=synthetic, cfg=cfg, data_cfg=s_cfg,
                         teacher=teacher, teacher_data_cfg=t_cfg, run_dir=tmp_path / "run")
    assert seen["teacher"] == {(3, 32, 32)}
    assert (3, 48, 48) in seen["student"]
    assert not teacher.training
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert result.best_epoch == 1 and 0.0 <= result.best_val["recall"] <= 1.0


def test_bf16_autocast_trains_on_cpu(store, synthetic, tmp_path):
    from defectopt.train.engine import TrainConfig, train_model

    model, data_cfg = _tiny("test_resnet", synthetic, 32)
    cfg = TrainConfig(epochs=1, batch_size=16, amp="bf16", device="cpu", quiet=True, grad_accum=2, balance="loss")
    result = train_model(store, model_id=None, model=model, dataset=synthetic, cfg=cfg, data_cfg=data_cfg,
                         run_dir=tmp_path / "run")
    assert np.isfinite(result.history[0]["train_loss"])
    with pytest.raises(DefectoptError, match="fp16 needs CUDA"):
        if torch.cuda.is_available():
            pytest.skip("CUDA present")
        train_model(store, model_id=None, model=model, dataset=synthetic, data_cfg=data_cfg,
                    cfg=TrainConfig(epochs=1, amp="fp16", device="cpu"), run_dir=tmp_path / "run2")


# --- commands ----------------------------------------------------------------------------------

def test_finetune_then_distill_kd_and_baseline_cross_architecture(store, synthetic):
    from defectopt.models.artifacts import data_config, load_artifact, load_torch_model
    from defectopt.models.catalog import describe_model

    r = _cli("finetune-teacher", "--model", "test_vit", "--data", "synthetic:80", "--img-size", 32, *TINY)
    assert r.exit_code == 0, r.output
    assert "random initialization" in r.output
    r = _cli("distill", "--teacher", "test_vit", "--student", "test_convnext", "--img-size", 48, "--alpha", 0.5, *TINY)
    assert r.exit_code == 0, r.output
    r = _cli("distill", "--teacher", "1", "--student", "test_convnext", "--img-size", 48, "--alpha", 0, *TINY)
    assert r.exit_code == 0, r.output
    assert "no-KD" in r.output

    assert _model_rows(store) == [(1, "test_vit", "ready", None), (2, "test_convnext", "ready", 1),
                                  (3, "test_convnext", "ready", 1)]
    teacher, kd, base = (describe_model(store, i) for i in (1, 2, 3))
    assert teacher["fields"]["config"]["init"].startswith("random initialization")
    assert load_artifact(store, 1).meta["pretrained"] is False
    assert kd["fields"]["lineage"] == "test_vit → test_convnext[KD α0.5]"
    assert base["fields"]["lineage"] == "test_vit → test_convnext[no-KD]"
    assert kd["fields"]["technique params"]["alpha"] == 0.5 and kd["fields"]["technique params"]["temperature"] == 4
    assert base["fields"]["technique params"]["alpha"] == 0
    # identical recipe apart from alpha
    kd_req, base_req = kd["fields"]["config"]["request"], base["fields"]["config"]["request"]
    assert {k: v for k, v in kd_req["train"].items() if k != "alpha"} == \
           {k: v for k, v in base_req["train"].items() if k != "alpha"}
    for info in (teacher, kd, base):
        assert [e["epoch"] for e in info["epochs"]] == [1, 2]
    # the artifacts load with their own sizes and normalization; run folders are gone
    art = load_artifact(store, 2)
    assert art.img_size == 48 and art.format == "torch" and art.meta["classes"] == synthetic.class_names
    assert data_config(art)["input_size"] == (3, 48, 48) and art.meta["teacher_id"] == 1
    assert load_torch_model(art)(torch.zeros(2, 3, 48, 48)).shape == (2, 2)
    assert not any((store.artifacts_root / ".runs").glob("*"))
    from defectopt.store.schema import Model

    with store.session() as s:
        assert s.get(Model, 2).param_count > 0


def test_distill_errors_are_one_line_and_write_nothing(store, synthetic):
    from conftest import make_ready_model
    from defectopt.store.db import table_counts

    r = _cli("distill", "--teacher", "test_vit", "--student", "test_resnet", "--img-size", 32, *TINY)
    assert isinstance(r.exception, DefectoptError) and "no ready finetune model of alias 'test_vit'" in str(r.exception)
    make_ready_model(store, "test_vit", synthetic, num_classes=3)
    before = table_counts(store)
    r = _cli("distill", "--teacher", "1", "--student", "test_resnet", "--img-size", 32, *TINY)
    assert isinstance(r.exception, DefectoptError) and "predicts 3 classes" in str(r.exception)
    r = _cli("finetune-teacher", "--model", "nope", "--data", "synthetic:80", *TINY)
    assert isinstance(r.exception, DefectoptError) and "unknown model alias" in str(r.exception)
    r = _cli("finetune-teacher", "--model", "test_vit", "--data", "synthetic:80", "--balance", "odd", *TINY)
    assert isinstance(r.exception, DefectoptError) and "--balance" in str(r.exception)
    if not torch.cuda.is_available():
        r = _cli("finetune-teacher", "--model", "test_vit", "--data", "synthetic:80", *TINY, "--device", "cuda")
        assert isinstance(r.exception, DefectoptError) and "no CUDA device" in str(r.exception)
    assert table_counts(store) == before


def test_interrupted_run_leaves_db_clean_and_resume_matches_uninterrupted(store, synthetic):
    from defectopt.train.engine import TrainConfig
    from defectopt.train.api import FINETUNE, RunRequest, finetune_teacher

    def request():
        cfg = TrainConfig(epochs=3, batch_size=16, device="cpu", quiet=True)
        return RunRequest(command=FINETUNE, model="test_resnet", data="synthetic:80", img_size=32, pretrained=False,
                          train=cfg)

    full = finetune_teacher(store, request(), echo=lambda _t: None)

    def interrupt(epoch, batch):
        if epoch == 1 and batch == 1:  # mid-way through the second epoch
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune_teacher(store, request(), on_step=interrupt, echo=lambda _t: None)
    cut = full.model_id + 1
    assert _model_rows(store)[-1] == (cut, "test_resnet", "failed", None)
    assert not (store.artifacts_root / str(cut)).exists()
    assert not list(store.artifacts_root.glob(".staging-*"))
    assert (store.artifacts_root / ".runs" / str(cut) / "last.pt").is_file()  # kept for --resume
    assert len(_epoch_rows(store, cut)) == 1
    # gc does not remove the run folder of a resumable run
    assert _cli("gc").exit_code == 0
    assert (store.artifacts_root / ".runs" / str(cut) / "last.pt").is_file()

    r = _cli("finetune-teacher", "--resume", cut, "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "resuming after epoch 1/3" in r.output
    assert _model_rows(store)[-1] == (cut, "test_resnet", "ready", None)
    a, b = _weights(store, full.model_id), _weights(store, cut)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _epoch_rows(store, full.model_id) == _epoch_rows(store, cut)
    r = _cli("finetune-teacher", "--resume", cut, "--quiet")
    assert isinstance(r.exception, DefectoptError) and "already finished" in str(r.exception)


def test_linear_probe_trains_only_the_head(store, synthetic):
    from defectopt.models.artifacts import load_artifact, load_torch_model
    from defectopt.models.factory import create

    r = _cli("finetune-teacher", "--model", "test_resnet", "--data", "synthetic:80", "--img-size", 32,
             "--freeze-backbone", "--seed", 5, *TINY)
    assert r.exit_code == 0, r.output
    trained = load_torch_model(load_artifact(store, 1)).state_dict()
    torch.manual_seed(5)
    init = create("test_resnet", 2, 32).state_dict()
    head = {"fc.weight", "fc.bias"}
    assert all(torch.equal(trained[k], init[k]) for k in init if k not in head)
    assert not torch.equal(trained["fc.weight"], init["fc.weight"])
    assert load_artifact(store, 1).meta["freeze_backbone"] is True


def test_linear_probe_features_compose_with_the_head_for_every_alias():
    """--freeze-backbone relies on forward_head(pre_logits=True) + get_classifier() == forward.

    One alias per head family: timm's tiny test_* models share the vit/convnext/efficientnet/resnet
    heads of the big aliases; mobilevit has no tiny twin. (Building every big alias, even on the
    meta device, costs ~45 s on 2 busy cores.)"""
    from defectopt.models.factory import create
    from defectopt.models.registry import REGISTRY

    for alias, spec in REGISTRY.items():
        if spec.role != "test" and spec.family != "mobilevit":
            continue
        size = 64
        with torch.device("meta"):
            model = create(alias, 6, size).eval()
            x = torch.zeros(2, 3, size, size)
            feats = model.forward_head(model.forward_features(x), pre_logits=True)
            assert model.get_classifier()(feats).shape == model(x).shape == (2, 6), alias
