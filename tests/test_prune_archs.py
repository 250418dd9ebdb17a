"""Structured pruning of the real student architectures (random init, 64 px to stay fast):
each prunes, reloads by ID alone with identical outputs, and exports to ONNX."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import make_ready_model

from defectopt.compress.prune.api import prune_models
from defectopt.compress.prune.options import PruneOptions
from defectopt.compress.prune.structured import attention_modules
from defectopt.models.artifacts import load_artifact, load_torch_model
from defectopt.models.factory import create

IMG = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("alias", ["vit_t16", "vit_s16", "convnext_tiny", "efficientnet_b0", "mobilevit_s"])
def test_real_architecture_prunes_reloads_and_exports(store, tmp_path, alias):
    import onnxruntime as ort

    from defectopt.models.export import export_onnx

    parent_id = make_ready_model(store, alias, img_size=IMG)
    with torch.device("meta"):
        heads_before = [m.num_heads for m in attention_modules(create(alias, 2, IMG))]
    (res,) = prune_models(store, replace(PruneOptions(finetune_epochs=0), model=str(parent_id), ratios=(0.5,)), keep_models=True)
    # pruning_ratio shrinks inputs and outputs: MACs fall about (1 - r)^2 (round-to-8 takes a bit more)
    assert 0.15 < res.macs_after / res.macs_before < 0.35, (res.macs_before, res.macs_after)

    rebuilt = load_torch_model(load_artifact(store, res.model_id))  # from the DB row, meta.json and safetensors only
    x = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = res.model.eval()(x), rebuilt(x)
    assert torch.equal(want, got)
    if heads_before:  # ViT blocks (and MobileViT's transformer blocks) lose whole heads
        after = [m.num_heads for m in attention_modules(rebuilt)]
        assert after == [h // 2 for h in heads_before]
        for m in attention_modules(rebuilt):
            assert m.attn_dim == m.num_heads * m.head_dim == m.proj.in_features

    path = export_onnx(rebuilt, IMG, tmp_path / "pruned.onnx")
    out = ort.InferenceSession(str(path), _ort_options()).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(out, want.numpy(), rtol=1e-3, atol=1e-4)


def _ort_options():
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return opts
