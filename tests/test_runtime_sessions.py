"""The runtime sessions bench and a deployed bundle share: outputs must be the model's, call after call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

ov = pytest.importorskip("openvino")

from defectopt.runtime.sessions import OpenVINOSession  # noqa: E402


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture
def tiny_ir(tmp_path):
    torch.manual_seed(0)
    model = _Tiny().eval()
    ir = ov.convert_model(model, example_input=torch.zeros(1, 3, 16, 16),
                          input=[ov.PartialShape([-1, 3, 16, 16])])
    path = tmp_path / "tiny.xml"
    ov.save_model(ir, str(path), compress_to_fp16=False)
    return model, path


def test_openvino_session_returns_each_batchs_own_logits_and_never_reuses_a_returned_array(tiny_ir):
    model, path = tiny_ir
    session = OpenVINOSession(path, threads=1, img_size=16)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    b = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    out_a = session.predict(a)
    kept = out_a.copy()
    out_b = session.predict(b)
    # the request reuses its output memory: a returned array must not change under the caller
    np.testing.assert_array_equal(out_a, kept)
    with torch.inference_mode():
        np.testing.assert_allclose(out_a, model(torch.from_numpy(a)).numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out_b, model(torch.from_numpy(b)).numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(out_a, out_b)


def test_openvino_session_takes_other_dtypes_layouts_and_batch_sizes(tiny_ir):
    model, path = tiny_ir
    session = OpenVINOSession(path, threads=1)
    x = np.random.default_rng(1).standard_normal((5, 16, 16, 3))  # float64, NHWC memory
    batch = x.transpose(0, 3, 1, 2)  # a non-contiguous NCHW view
    out = session.predict(batch)
    with torch.inference_mode():
        expected = model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    assert session.predict(batch[:2]).shape == (2, 3)
    session.close()
