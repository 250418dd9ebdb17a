import torch

from conftest import make_ready_model


def test_ready_model_roundtrip(store, synthetic):
    from defectopt.models.artifacts import load_artifact, load_torch_model

    mid = make_ready_model(store, "test_vit", synthetic)
    art = load_artifact(store, mid)
    m = load_torch_model(art)
    out = m(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 2)
