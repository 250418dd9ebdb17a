"""`defectopt quantize`: every method saves a new row, reloads by ID in its own engine, stays
close to FP32, and the reloaded artifact computes exactly what was quantized before saving.

Tolerances (tiny random-init test_* models at 32x32, val split of synthetic:80): INT8 logit
error (RMS relative to the FP32 logit range) < 0.1 and logit-margin correlation > 0.9;
BF16 < 0.02 and > 0.99.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from conftest import make_ready_model
from defectopt.cli import app
from defectopt.compress.quantize.api import quantize_model
from defectopt.compress.quantize.options import QuantizeOptions
from defectopt.errors import DefectoptError
from defectopt.models.artifacts import load_artifact
from defectopt.store.schema import Model
from fixtures.clihelp import assert_user_error, run_cli

CALIB = 8


def _batch(img_size=32, n=4, seed=3):
    return np.random.default_rng(seed).standard_normal((n, 3, img_size, img_size)).astype(np.float32)


def _run_by_id(store, model_id, x):
    from defectopt.bench.runners import open_runner

    runner = open_runner(load_artifact(store, model_id))
    return runner, runner.predict(x)


def _model_count(store):
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(Model))


def _assert_int8_close(fid):
    assert fid["logit_rel_err"] < 0.1, fid
    assert fid["margin_corr"] > 0.9, fid


def test_dynamic_int8_reloads_by_id_with_identical_outputs(store, synthetic):
    import torch

    from defectopt.models import torch_quantized as torch_formats
    from defectopt.compress.quantize.common import load_parent

    parent_id = make_ready_model(store, "test_vit", synthetic)
    out = quantize_model(store, QuantizeOptions(model=str(parent_id), method="dynamic"))
    (res,) = out.results
    art = load_artifact(store, res.model_id)
    assert art.format == "torch-int8-dynamic" and art.parent_id == parent_id and art.meta["precision"] == "int8"
    assert art.technique == "quantize-dynamic" and art.dataset_id == synthetic.id
    _assert_int8_close(res.fidelity)
    assert res.fidelity["backend"] == "torch" and res.fidelity["precision"] == "int8"
    # before saving: the in-memory torch.ao model; after: rebuilt from int8 safetensors by ID
    parent = load_parent(store, parent_id)
    before = torch_formats.quantize_dynamic(parent.model, torch_formats.linear_names(parent.model))
    x = _batch()
    with torch.inference_mode():
        expected = before(torch.from_numpy(x)).numpy()
    runner, got = _run_by_id(store, res.model_id, x)
    assert runner.precision == "int8"
    np.testing.assert_array_equal(got, expected)
    # real INT8 storage: the Linear weights are int8 tensors, not FP32 + a recipe
    from safetensors import safe_open

    with safe_open(str(art.file(torch_formats.INT8_FILE)), "pt") as fh:
        dtypes = {fh.get_tensor(k).dtype for k in fh.keys() if k.endswith(".int8_weight")}
    assert dtypes == {torch.int8}
    assert art.size_bytes < load_artifact(store, parent_id).size_bytes / 1.5


def test_static_openvino_reload_matches_the_model_before_saving(store, synthetic, monkeypatch):
    from defectopt.runtime.sessions import compile_ir
    from defectopt.compress.quantize import static
    from defectopt.bench.host import cpu_has_bf16

    captured = {}
    real_save = static.save_openvino

    def capture(model, folder):
        captured["model"] = model
        return real_save(model, folder)

    monkeypatch.setattr(static, "save_openvino", capture)
    parent_id = make_ready_model(store, "test_convnext", synthetic)
    out = quantize_model(store, QuantizeOptions(model=str(parent_id), method="static", calib_images=CALIB))
    (res,) = out.results
    art = load_artifact(store, res.model_id)
    # default --float-precision auto: the float rest of the INT8 model runs in BF16 where the CPU can
    hint = "bf16" if cpu_has_bf16() else "fp32"
    assert art.format == "openvino" and art.meta["precision"] == "int8" and art.meta["inference_precision"] == hint
    grid = static.grid_label(static.resolve_overflow_fix("auto"))  # --overflow-fix auto: by this CPU too
    assert res.label == "int8-static-ov" + ("+bf16" if hint == "bf16" else "") + grid and res.fidelity["backend"] == "openvino"
    _assert_int8_close(res.fidelity)
    x = _batch()
    compiled = compile_ir(captured["model"], inference_precision=hint, shape=x.shape)
    expected = np.asarray(compiled(x)[0])
    runner, got = _run_by_id(store, res.model_id, x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # one static-shape compilation per batch shape, kept in a small cache
    single = runner.predict(x[:1])
    np.testing.assert_allclose(single, got[:1], rtol=0, atol=0.05 * float(np.abs(got).max()))
    assert set(runner.session._compiled) >= {(1, 3, 32, 32), tuple(x.shape)}
    for n in range(2, 8):
        runner.predict(_batch(n=n))
    from defectopt.runtime.sessions import MAX_COMPILED_SHAPES

    assert len(runner.session._compiled) == MAX_COMPILED_SHAPES
    # INT8 weights in the IR (tiny models: the XML graph text dominates the folder, so compare weights)
    fp32_weights = load_artifact(store, parent_id).file("model.safetensors").stat().st_size
    assert art.file("model.bin").stat().st_size < fp32_weights / 3


def test_static_onnxruntime_vit_keep_fp_named_layers(store, synthetic, monkeypatch):
    import onnx
    import onnxruntime as ort

    from defectopt.compress.quantize import static

    captured = {}
    real = static.quantize_onnx

    def capture(parent, calib, out_path, **kw):
        info = real(parent, calib, out_path, **kw)
        captured["bytes"] = out_path.read_bytes()
        return info

    monkeypatch.setattr(static, "quantize_onnx", capture)
    parent_id = make_ready_model(store, "test_vit", synthetic)
    opts = QuantizeOptions(method="static", backend="onnxruntime", calib_images=CALIB, keep_fp="blocks.0,head",
                           time_keep_fp=False)
    (res,) = quantize_model(store, replace(opts, model=str(parent_id))).results
    art = load_artifact(store, res.model_id)
    assert art.format == "onnx" and art.meta["precision"] == "int8"
    grid = static.grid_label(static.resolve_overflow_fix("auto"))  # ORT: reduce_range on CPUs without VNNI
    assert art.meta["quantize"]["keep_fp"] == ["blocks.0", "head"] and res.label == "int8-static-ort-fp2" + grid
    _assert_int8_close(res.fidelity)
    graph = onnx.load(str(art.file("model.onnx"))).graph
    quantized = {n.name for n in graph.node if n.op_type == "MatMul" and any("DequantizeLinear" in i or "_quantized" in i for i in n.input)}
    assert quantized and not any("/blocks.0/" in n for n in quantized)  # kept float
    x = _batch()
    expected = ort.InferenceSession(captured["bytes"], providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    _, got = _run_by_id(store, res.model_id, x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    with pytest.raises(DefectoptError, match="unknown layer group"):
        quantize_model(store, QuantizeOptions(model=str(parent_id), method="static", keep_fp="blocks.99"))
    with pytest.raises(DefectoptError, match="--sensitivity"):
        quantize_model(store, QuantizeOptions(model=str(parent_id), method="static", keep_fp="2"))


def test_bf16_openvino_close_to_fp32(store, synthetic):
    """BF16 where the CPU has it (AVX512-BF16 or AMX); elsewhere (CI lands on AVX2-only CPUs too)
    the one-line refusal, exit code 2, and no model row."""
    from defectopt.bench.host import cpu_has_bf16

    parent_id = make_ready_model(store, "test_resnet", synthetic)
    if not cpu_has_bf16():
        before = _model_count(store)
        assert_user_error(run_cli(["quantize", "--id", parent_id, "--method", "bf16"]), "no AVX512-BF16/AMX")
        assert _model_count(store) == before
        return
    (res,) = quantize_model(store, QuantizeOptions(model=str(parent_id), method="bf16")).results
    art = load_artifact(store, res.model_id)
    assert art.format == "openvino" and art.meta["inference_precision"] == "bf16" and res.fidelity["precision"] == "bf16"
    assert res.fidelity["logit_rel_err"] < 0.02 and res.fidelity["margin_corr"] > 0.99, res.fidelity
    x = _batch()
    _, a = _run_by_id(store, res.model_id, x)
    _, b = _run_by_id(store, res.model_id, x)
    np.testing.assert_array_equal(a, b)


def test_fp16_on_cpu_and_inapplicable_backends_are_refused_with_one_line(store, synthetic):
    parent_id = make_ready_model(store, "test_vit", synthetic)
    before = _model_count(store)
    assert_user_error(run_cli(["quantize", "--id", parent_id, "--method", "fp16"]),
                      "FP16 is offered on CUDA only", "--method bf16")
    for backend, hint in (("fx", "openvino"), ("pt2e", "openvino"), ("tensorrt", "choose from")):
        with pytest.raises(DefectoptError, match=hint):
            quantize_model(store, QuantizeOptions(model=str(parent_id), method="static", backend=backend))
    with pytest.raises(DefectoptError, match="--method static"):
        quantize_model(store, QuantizeOptions(model=str(parent_id), method="dynamic", backend="openvino"))
    assert _model_count(store) == before  # refused before any row was written


def test_pt2e_and_fx_refusals_name_the_reason_and_the_backend_to_use():
    from defectopt.compress.quantize import static

    with pytest.raises(DefectoptError, match="far slower than FP32 on mobilevit_s.*--backend openvino"):
        static.refuse_backend("pt2e", "mobilevit", "mobilevit_s")
    with pytest.raises(DefectoptError, match="check_pt2e.py.*--backend openvino"):
        static.refuse_backend("pt2e", "convnext", "convnext_tiny")
    with pytest.raises(DefectoptError, match="cannot trace mobilevit_s"):
        static.refuse_backend("fx", "mobilevit", "mobilevit_s")
    with pytest.raises(DefectoptError, match="without pickle.*--backend openvino"):
        static.refuse_backend("fx", "convnext", "convnext_tiny")


def test_dynamic_on_a_cnn_says_it_only_quantizes_linear_layers(store, synthetic):
    parent_id = make_ready_model(store, "test_resnet", synthetic)
    result = CliRunner().invoke(app, ["quantize", "--id", str(parent_id), "--method", "dynamic"])
    assert result.exit_code == 0, result.output
    assert "only Linear layers" in " ".join(result.output.split())


def test_pruned_parent_quantizes_and_reloads_with_its_pruned_structure(store, synthetic):
    from defectopt.compress.prune.api import prune_models
    from defectopt.compress.prune.options import PruneOptions

    parent_id = make_ready_model(store, "test_vit", synthetic)
    (pruned,) = prune_models(store, replace(PruneOptions(finetune_epochs=0), model=str(parent_id), ratios=(0.5,)))
    (res,) = quantize_model(store, QuantizeOptions(model=str(pruned.model_id), method="dynamic")).results
    art = load_artifact(store, res.model_id)
    assert art.meta["skeleton"]["format"] == "torch-pruned" and art.parent_id == pruned.model_id
    _assert_int8_close(res.fidelity)
    x = _batch()
    _, a = _run_by_id(store, res.model_id, x)
    _, b = _run_by_id(store, res.model_id, x)
    np.testing.assert_array_equal(a, b)


def test_weight_only_int4_and_int8_are_openvino_models_with_float_activations(store, synthetic):
    """NNCF weight compression of a ViT's Linear weights: smaller, runs in OpenVINO, scored on val."""
    from defectopt.bench.runners import open_runner
    from defectopt.models.artifacts import get_row, load_artifact

    parent_id = make_ready_model(store, "test_vit", synthetic)
    fp32_bytes = get_row(store, parent_id).size_bytes
    for method, precision in (("weights-int4", "int4w"), ("weights-int8", "int8w")):
        (res,) = quantize_model(store, QuantizeOptions(model=str(parent_id), method=method, group_size=16)).results
        art = load_artifact(store, res.model_id)
        assert art.format == "openvino" and art.meta["precision"] == precision
        assert get_row(store, res.model_id).size_bytes < fp32_bytes / 2
        assert 0.0 <= res.fidelity["val_recall"] <= 1.0 and res.fidelity["margin_corr"] > 0.5
        x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
        assert open_runner(art, threads=1).predict(x).shape == (2, 2)
    with pytest.raises(DefectoptError, match="apply to --method weights-int4"):
        quantize_model(store, QuantizeOptions(model=str(parent_id), method="weights-int8", all_layers=True))
    with pytest.raises(DefectoptError, match="--backend openvino"):
        quantize_model(store, QuantizeOptions(model=str(parent_id), method="weights-int4", backend="onnxruntime"))


def test_low_bit_qat_is_a_simulated_accuracy_row_that_bench_never_times(store, db_path, synthetic):
    """--bits 4: weights take at most 15 levels per output channel, the row is `w4a8-sim`, bench
    stores recall and the packed size and writes no latency row."""
    import torch

    from defectopt.bench.options import BenchOptions
    from defectopt.bench.api import run_bench
    from defectopt.compress.quantize.options import QATConfig
    from defectopt.models.artifacts import load_artifact, load_torch_model
    from defectopt.models.lowbit import LowBit, fake_quant_weight
    from defectopt.store.schema import Measurement

    parent_id = make_ready_model(store, "test_resnet", synthetic)
    opts = QuantizeOptions(model=str(parent_id), method="qat", bits=4, calib_images=8,
                           qat=QATConfig(epochs=1, batch_size=16, quiet=True))
    (res,) = quantize_model(store, opts).results
    art = load_artifact(store, res.model_id)
    assert art.format == "torch-lowbit-sim" and art.meta["precision"] == "w4a8-sim" and art.meta["simulated"]
    model = load_torch_model(art)
    layers = [m for m in model.modules() if isinstance(m, LowBit)]
    inner = [m for m in layers if m.bits == 4]
    assert inner and len(layers) - len(inner) == 2  # first conv and classifier stay 8-bit
    w = fake_quant_weight(inner[0].inner.weight, 4)
    assert max(len(torch.unique(w[c])) for c in range(w.shape[0])) <= 15
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # frozen ranges: deterministic
    run_bench(store, BenchOptions(ids=str(res.model_id), batch_sizes=(1,), threads=1, quick=True, memory=False,
                                  roofline=False, bootstrap=50))
    with store.session() as s:
        rows = {m.metric: m for m in s.query(Measurement).filter_by(model_id=res.model_id)}
    assert "recall" in rows and not any(k.startswith("latency") for k in rows)
    assert rows["size_mb"].value * 1e6 == art.meta["packed_bytes"] and rows["size_mb"].precision == "w4a8-sim"
    with pytest.raises(DefectoptError, match="--bits takes"):
        quantize_model(store, replace(opts, bits=7))
    with pytest.raises(DefectoptError, match="--bits applies to --method qat"):
        quantize_model(store, QuantizeOptions(model=str(parent_id), method="static", bits=4))


def test_pruning_then_low_bit_qat_is_one_lineage(store, synthetic):
    """Pruned (Torch-Pruning, narrower layers) + 4-bit QAT: the simulated child rebuilds the pruned structure."""
    import torch

    from defectopt.compress.prune.api import prune_models
    from defectopt.compress.prune.options import PruneOptions
    from defectopt.compress.quantize.options import QATConfig
    from defectopt.models.artifacts import get_row, load_artifact, load_torch_model

    parent_id = make_ready_model(store, "test_resnet", synthetic)
    (pruned,) = prune_models(store, PruneOptions(model=str(parent_id), ratios=(0.5,), finetune_epochs=0))
    opts = QuantizeOptions(model=str(pruned.model_id), method="qat", bits=4, calib_images=8,
                           qat=QATConfig(epochs=1, batch_size=16, quiet=True))
    (res,) = quantize_model(store, opts).results
    art = load_artifact(store, res.model_id)
    assert art.meta["lowbit"]["base_format"] == "torch-pruned" and get_row(store, res.model_id).parent_id == pruned.model_id
    model = load_torch_model(art)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2)
    assert art.meta["packed_bytes"] < get_row(store, pruned.model_id).size_bytes / 4


def _int8_weight_extremes(xml) -> dict[str, int]:
    """max |value| of every INT8 weight constant of an IR (how much of the 8-bit grid it uses)."""
    import openvino as ov

    def consumer(node):  # through the dequantization (Convert, Subtract, Multiply, Reshape) to the layer
        while node.get_type_name() in ("Constant", "Convert", "Subtract", "Multiply", "Reshape"):
            node = next(iter(node.output(0).get_target_inputs())).get_node()
        return f"{node.get_type_name()} {node.get_friendly_name()}"

    model = ov.Core().read_model(str(xml))
    return {consumer(op): int(np.abs(op.get_data().astype(np.int16)).max()) for op in model.get_ops()
            if op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.i8}


def test_overflow_fix_picks_the_int8_weight_grid_by_cpu_and_is_recorded(store, synthetic, monkeypatch):
    """--overflow-fix (NNCF's overflow_fix): `enable` puts the INT8 weights of every dense layer on
    half the grid (|w| <= 64), `disable` uses all of it; `auto` is `enable` on CPUs without VNNI/AMX (whose
    INT8 kernels saturate: README_RESULTS 1.9) and NNCF's `first_layer_only` elsewhere. The
    resolved mode is recorded on the row; ONNX Runtime's equivalent is reduce_range."""
    from defectopt.bench import host
    from defectopt.compress.quantize import static
    from defectopt.models.artifacts import get_row

    for has_dot, expected in ((True, "first_layer_only"), (False, "enable")):
        monkeypatch.setattr(host, "cpu_has_int8_dot", lambda has_dot=has_dot: has_dot)
        assert static.resolve_overflow_fix("auto") == expected
    assert static.resolve_overflow_fix("disable") == "disable"
    parent_id = make_ready_model(store, "test_convnext", synthetic)
    extremes = {}
    for mode in ("enable", "disable"):
        (res,) = quantize_model(store, QuantizeOptions(model=str(parent_id), method="static", calib_images=CALIB,
                                                       overflow_fix=mode, float_precision="fp32")).results
        art = load_artifact(store, res.model_id)
        assert art.meta["quantize"]["overflow_fix"] == mode and art.meta["nncf"]["overflow_fix"] == mode
        assert get_row(store, res.model_id).config["quantize"]["overflow_fix"] == mode
        assert res.label == {"enable": "int8-static-ov+w7", "disable": "int8-static-ov+w8"}[mode]
        extremes[mode] = _int8_weight_extremes(art.file("model.xml"))
    # NNCF leaves depthwise (GroupConvolution) weights on the full grid: their kernels add no pairs
    dense = {k: v for k, v in extremes["enable"].items() if not k.startswith("GroupConvolution")}
    assert dense and max(dense.values()) <= 64, extremes["enable"]
    assert max(extremes["disable"].values()) > 100, extremes
    (res,) = quantize_model(store, QuantizeOptions(model=str(parent_id), method="static", backend="onnxruntime",
                                                   calib_images=CALIB, overflow_fix="enable")).results
    art = load_artifact(store, res.model_id)
    assert art.meta["quantize"]["overflow_fix"] == "enable" and "reduce_range" in art.meta["ort_quantization"]["weights"]
    assert res.label == "int8-static-ort+w7"
    before = _model_count(store)
    assert_user_error(run_cli(["quantize", "--id", parent_id, "--method", "static", "--overflow-fix", "half"]),
                      "unknown --overflow-fix 'half'")
    assert_user_error(run_cli(["quantize", "--id", parent_id, "--method", "dynamic", "--overflow-fix", "enable"]),
                      "--overflow-fix applies to")
    assert _model_count(store) == before
