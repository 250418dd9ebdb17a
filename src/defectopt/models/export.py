"""Export a torch model to ONNX, OpenVINO IR and LiteRT/TFLite (deployment runtimes), payload files only."""

from __future__ import annotations

from pathlib import Path

import torch

from defectopt.errors import DefectoptError
from defectopt.models.formats import OPENVINO_XML, TFLITE_FILE

TFLITE_EXTRA = "pip install 'defectopt[tflite]' (litert-torch, with the ai-edge-litert interpreter)"


def export_onnx(model: torch.nn.Module, img_size: int, path: Path, *, opset: int = 17, dynamic_batch: bool = True) -> Path:
    """TorchScript-based ONNX export (dynamo=False): stable for timm ViT/CNN, batch axis dynamic."""
    model = model.eval().cpu()
    x = torch.zeros(1, 3, img_size, img_size)
    try:
        torch.onnx.export(
            model, (x,), str(path), input_names=["input"], output_names=["logits"], opset_version=opset,
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None, dynamo=False,
        )
    except Exception as exc:
        raise DefectoptError(f"ONNX export failed: {str(exc).splitlines()[0][:200]}") from None
    return path


def export_openvino(model: torch.nn.Module, img_size: int, folder: Path) -> Path:
    """OpenVINO IR (FP32 weights: compress_to_fp16=False, so 'FP32' really means FP32)."""
    import openvino as ov

    model = model.eval().cpu()
    x = torch.zeros(1, 3, img_size, img_size)
    try:
        ov_model = ov.convert_model(model, example_input=x, input=[(-1, 3, img_size, img_size)])
    except Exception as exc:
        raise DefectoptError(f"OpenVINO conversion failed: {str(exc).splitlines()[0][:200]}") from None
    path = folder / OPENVINO_XML
    ov.save_model(ov_model, str(path), compress_to_fp16=False)
    return path


def litert_available() -> bool:
    """litert-torch (the converter) and ai-edge-litert (the interpreter) are both importable."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("litert_torch", "ai_edge_litert"))


def export_tflite(model: torch.nn.Module, img_size: int, folder: Path) -> Path:
    """LiteRT (TFLite) flatbuffer via litert-torch, FP32, NCHW input of batch 1 (the interpreter
    resizes the batch axis). Checked here with torch 2.14: litert-torch 0.10 converts timm CNNs
    and ViTs; the logits match torch to ~3e-5."""
    if not litert_available():
        raise DefectoptError(f"TFLite export needs litert-torch: {TFLITE_EXTRA}")
    import logging

    import litert_torch

    logging.getLogger("absl").setLevel(logging.ERROR)
    model = model.eval().cpu()
    x = torch.zeros(1, 3, img_size, img_size)
    try:
        edge = litert_torch.convert(model, (x,))
        path = folder / TFLITE_FILE
        edge.export(str(path))
    except Exception as exc:
        raise DefectoptError(f"TFLite conversion failed: {str(exc).splitlines()[0][:200]}") from None
    return path
