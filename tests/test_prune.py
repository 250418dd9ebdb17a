"""defectopt prune on timm's tiny test architectures: structured/unstructured, reload by ID,
export, sweeps, option errors and recovery fine-tuning with KD."""

from __future__ import annotations

from dataclasses import replace

import math

import numpy as np
import pytest
import torch
from conftest import make_ready_model
from fixtures.clihelp import assert_user_error, db_state, run_cli
from sqlalchemy import select

from defectopt.compress.prune.api import prune_models
from defectopt.compress.prune.options import PruneOptions
from defectopt.compress.prune.structured import StructuredConfig, _head_schedule, attention_modules, prune_structured
from defectopt.models.artifacts import load_artifact, load_torch_model
from defectopt.store.schema import Model, TrainEpoch

NO_FT = PruneOptions(finetune_epochs=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _x(img: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, img, img, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("alias", ["test_vit", "test_convnext", "test_efficientnet", "test_resnet"])
def test_structured_prune_reloads_by_id_and_exports(store, synthetic, tmp_path, alias):
    import onnxruntime as ort

    from defectopt.bench.runners import open_runner
    from defectopt.models.export import export_onnx
    from defectopt.models.catalog import list_models

    parent_id = make_ready_model(store, alias, synthetic)
    (res,) = prune_models(store, replace(NO_FT, model=str(parent_id), ratios=(0.5,)))
    assert res.format == "torch-pruned" and res.parent_id == parent_id
    assert res.macs_after < 0.6 * res.macs_before and res.params_after < 0.6 * res.params_before

    # the same pruning replayed in memory on the parent == the artifact rebuilt from its ID alone
    expected = load_torch_model(load_artifact(store, parent_id))
    prune_structured(expected, img_size=32, cfg=StructuredConfig(ratio=0.5))
    art = load_artifact(store, res.model_id)
    rebuilt = load_torch_model(art)
    assert isinstance(rebuilt, torch.nn.Module) and type(rebuilt) is type(expected)
    x = _x(32)
    with torch.no_grad():
        want, got = expected.eval()(x), rebuilt(x)
    assert torch.equal(want, got)
    assert {k: list(v.shape) for k, v in rebuilt.state_dict().items()} == {k: list(v.shape) for k, v in expected.state_dict().items()}

    # technique params and lineage
    params = art.meta["pruning"]
    for key in ("ratio", "method", "importance", "global", "iterative_steps", "round_to",
                "macs_before", "macs_after", "params_before", "params_after"):
        assert key in params, key
    assert params["method"] == "structured" and params["ratio"] == 0.5
    row = next(r for r in list_models(store) if r["id"] == res.model_id)
    assert row["chain"].endswith("prune0.5") and row["technique"] == "prune"

    # eager runner by format, and ONNX export of the rebuilt model
    runner = open_runner(art, threads=1)
    np.testing.assert_allclose(runner.predict(x.numpy()), want.numpy(), rtol=1e-5, atol=1e-6)
    path = export_onnx(rebuilt, 32, tmp_path / "pruned.onnx")
    onnx_out = ort.InferenceSession(str(path), _ort_options()).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(onnx_out, want.numpy(), rtol=1e-3, atol=1e-4)


def test_vit_heads_and_attention_attributes(store):
    parent_id = make_ready_model(store, "test_vit")
    parent = load_torch_model(load_artifact(store, parent_id))
    heads_before = [m.num_heads for m in attention_modules(parent)]
    (res,) = prune_models(store, replace(NO_FT, model=str(parent_id), ratios=(0.5,)))
    model = load_torch_model(load_artifact(store, res.model_id))
    for m, h0 in zip(attention_modules(model), heads_before):
        assert m.num_heads == max(1, math.floor(h0 * 0.5))
        assert m.attn_dim == m.num_heads * m.head_dim == m.qkv.out_features // 3 == m.proj.in_features
    assert res.extra["heads"] == [m.num_heads for m in attention_modules(model)]


@pytest.mark.parametrize("heads,ratio,steps", [(6, 0.5, 1), (6, 0.5, 2), (6, 0.5, 3), (12, 0.3, 4), (3, 0.5, 2)])
def test_iterative_head_schedule_matches_one_shot(heads, ratio, steps):
    """torch-pruning removes ceil(r_k x current heads) per step; the schedule must land on the one-shot count."""
    schedule = _head_schedule(heads, ratio, steps)
    current = heads
    for k in range(1, steps + 1):
        if schedule[k] > 0:
            current -= math.ceil(schedule[k] * current)
    assert current == max(1, math.floor(heads * (1 - ratio)))


def test_options_global_iterative_taylor_random_round_to(store, synthetic):
    parent_id = make_ready_model(store, "test_convnext", synthetic)
    variants = [
        PruneOptions(finetune_epochs=0, global_pruning=True),
        PruneOptions(finetune_epochs=0, iterative_steps=2, importance="l2"),
        PruneOptions(finetune_epochs=0, importance="taylor", calib_batches=2, batch_size=8),
        PruneOptions(finetune_epochs=0, importance="random", round_to=1),
    ]
    outs = {}
    for opts in variants:
        (res,) = prune_models(store, replace(opts, model=str(parent_id), ratios=(0.4,)))
        art = load_artifact(store, res.model_id)
        model = load_torch_model(art)
        outs[opts.importance + str(opts.global_pruning)] = model(_x(32)).detach()
        assert art.meta["pruning"]["importance"] == opts.importance
        assert art.meta["pruning"]["global"] == opts.global_pruning
        assert art.meta["pruning"]["iterative_steps"] == opts.iterative_steps
        if opts.round_to == 8:  # every pruned width is a multiple of 8 (the classifier's outputs stay 2)
            head = model.get_classifier()
            for m in model.modules():
                if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m is not head:
                    assert m.weight.shape[0] % 8 == 0, m
    # different importances choose different channels
    assert not torch.allclose(outs["l1True"], outs["randomFalse"])


def test_sweep_macs_drop_monotonically(store, synthetic, db_path):
    parent_id = make_ready_model(store, "test_vit", synthetic)
    res = run_cli(["prune", "--id", parent_id, "--ratios", "0.2,0.4,0.6", "--finetune-epochs", "0"])
    assert res.code == 0, res.stderr
    with store.session() as s:
        rows = s.scalars(select(Model).where(Model.parent_id == parent_id).order_by(Model.id)).all()
        params = [r.technique.params for r in rows]
    assert [p["ratio"] for p in params] == [0.2, 0.4, 0.6]
    macs = [params[0]["macs_before"]] + [p["macs_after"] for p in params]
    sizes = [params[0]["params_before"]] + [p["params_after"] for p in params]
    assert all(a > b for a, b in zip(macs, macs[1:])), macs
    assert all(a > b for a, b in zip(sizes, sizes[1:])), sizes


@pytest.mark.parametrize("args,needle", [
    (["--ratio", "0"], "between 0 and 1"),
    (["--ratio", "1"], "between 0 and 1"),
    (["--ratio", "1.5"], "between 0 and 1"),
    (["--ratio", "-0.2"], "between 0 and 1"),
    (["--ratios", "0.2,1.0"], "between 0 and 1"),
    (["--ratios", "0.2,half"], "--ratios"),
    (["--ratio", "0.3", "--ratios", "0.2"], "exactly one"),
    ([], "exactly one"),
    (["--ratio", "0.3", "--importance", "fisher"], "--importance"),
    (["--ratio", "0.3", "--method", "unstructured", "--importance", "taylor"], "--importance"),
    (["--ratio", "0.3", "--method", "blocks"], "--method"),
    (["--ratio", "0.3", "--iterative-steps", "0"], "--iterative-steps"),
    (["--ratio", "0.3", "--kd-from", "1", "--finetune-epochs", "0"], "--kd-from"),
])
def test_bad_options_are_one_line_errors_and_write_nothing(store, synthetic, db_path, args, needle):
    parent_id = make_ready_model(store, "test_resnet", synthetic)
    before = db_state(db_path)
    assert_user_error(run_cli(["prune", "--id", parent_id, *args]), needle)
    assert db_state(db_path) == before


def test_unknown_model_and_unprunable_format(store, synthetic, db_path):
    from defectopt.models import artifacts

    assert_user_error(run_cli(["prune", "--id", "999", "--ratio", "0.3"]), "999")
    mid = artifacts.begin_model(store, alias="test_resnet", timm_name="test_resnet", technique="quantize-onnx",
                                parent_id=None, dataset_id=synthetic.id, img_size=32, num_classes=2)
    with artifacts.publish(store, mid, format="onnx", meta={}) as d:
        (d / "model.onnx").write_bytes(b"not used")
    before = db_state(db_path)
    assert_user_error(run_cli(["prune", "--id", mid, "--ratio", "0.3"]), "onnx")
    assert db_state(db_path) == before


def test_unstructured_keeps_shapes_and_reports_sparsity_and_sizes(store, synthetic):
    from defectopt.models.catalog import list_models

    parent_id = make_ready_model(store, "test_resnet", synthetic)
    parent = load_torch_model(load_artifact(store, parent_id))
    res = run_cli(["prune", "--id", parent_id, "--ratio", "0.7", "--method", "unstructured", "--global",
                   "--finetune-epochs", "0"])
    assert res.code == 0, res.stderr
    assert "no speedup" in res.stdout
    row = next(r for r in list_models(store) if r["alias"] == "test_resnet" and r["technique"] == "prune")
    art = load_artifact(store, row["id"])
    assert art.format == "torch" and row["chain"].endswith("prune0.7-unstructured")
    model = load_torch_model(art)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in parent.state_dict().items()}
    info = art.meta["pruning"]
    assert info["method"] == "unstructured"
    assert info["macs_after"] == info["macs_before"] and info["params_after"] == info["params_before"]
    assert info["sparsity"] == pytest.approx(0.7, abs=0.01)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    zeros = sum(int((w == 0).sum()) for w in convs) / sum(w.numel() for w in convs)
    assert zeros >= 0.69
    assert info["compressed_bytes"] < 0.6 * info["dense_bytes"]
    assert info["csr_bytes"] < info["dense_bytes"]
    assert info["dense_bytes"] == art.file("model.safetensors").stat().st_size


def test_recovery_finetuning_with_kd_writes_curve(store, synthetic):
    teacher_id = make_ready_model(store, "test_convnext", synthetic, seed=3)
    parent_id = make_ready_model(store, "test_resnet", synthetic)
    opts = PruneOptions(finetune_epochs=1, kd_from=str(teacher_id), alpha=0.5, batch_size=16, quiet=True, device="cpu")
    (res,) = prune_models(store, replace(opts, model=str(parent_id), ratios=(0.3,)))
    assert res.best_val is not None and "recall" in res.best_val and res.best_epoch == 1
    art = load_artifact(store, res.model_id)
    assert art.meta["pruning"]["kd_from"] == teacher_id and art.meta["pruning"]["recovery"]["best_epoch"] == 1
    with store.session() as s:
        epochs = s.scalars(select(TrainEpoch).where(TrainEpoch.model_id == res.model_id)).all()
    assert len(epochs) == 1
    # no run folder is left behind once the artifact is published
    assert not any(p.name == str(res.model_id) for p in (store.artifacts_root / ".runs").glob("*"))
    load_torch_model(art)(_x(32))


def test_unstructured_recovery_keeps_zeros(store, synthetic):
    parent_id = make_ready_model(store, "test_resnet", synthetic)
    opts = PruneOptions(method="unstructured", finetune_epochs=1, batch_size=16, quiet=True, device="cpu", lr=1e-2)
    (res,) = prune_models(store, replace(opts, model=str(parent_id), ratios=(0.5,)))
    art = load_artifact(store, res.model_id)
    assert art.meta["pruning"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert "weight_orig" not in " ".join(load_torch_model(art).state_dict())


def test_prune_a_pruned_model(store, synthetic):
    parent_id = make_ready_model(store, "test_convnext", synthetic)
    (first,) = prune_models(store, replace(NO_FT, model=str(parent_id), ratios=(0.3,)))
    (second,) = prune_models(store, replace(NO_FT, model=str(first.model_id), ratios=(0.3,)))
    (sparse,) = prune_models(store, replace(PruneOptions(finetune_epochs=0, method="unstructured"), model=str(first.model_id), ratios=(0.5,)))
    assert second.macs_before == pytest.approx(first.macs_after)
    assert second.macs_after < first.macs_after
    assert load_artifact(store, sparse.model_id).format == "torch-pruned"  # still the narrower architecture
    for r in (second, sparse):
        load_torch_model(load_artifact(store, r.model_id))(_x(32))


def test_pruned_model_quantizes_like_any_other(store, synthetic):
    """Pruned → INT8: OpenVINO NNCF (via the ONNX/OV export path) and torch dynamic INT8 (which
    rebuilds the pruned skeleton from the stored structure)."""
    from defectopt.bench.runners import open_runner
    from defectopt.compress.quantize.api import quantize_model
    from defectopt.compress.quantize.options import QuantizeOptions

    parent_id = make_ready_model(store, "test_convnext", synthetic)
    (pruned,) = prune_models(store, replace(NO_FT, model=str(parent_id), ratios=(0.5,)))
    x = _x(32).numpy()
    reference = open_runner(load_artifact(store, pruned.model_id)).predict(x)
    for method in ("static", "dynamic"):
        out = quantize_model(store, QuantizeOptions(model=str(pruned.model_id), method=method, calib_images=16, time_keep_fp=False),
                             log=lambda _msg: None)
        art = load_artifact(store, out.results[0].model_id)
        assert art.parent_id == pruned.model_id
        got = open_runner(art).predict(x)
        assert got.shape == reference.shape
        assert np.abs(got - reference).max() < 0.2 * max(1.0, np.abs(reference).max()), method


def _ort_options():
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return opts
