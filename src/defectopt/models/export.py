"""Export a torch model to ONNX and OpenVINO IR (deployment runtimes), payload files only."""

from __future__ import annotations

from pathlib import Path

import torch

from defectopt.errors import DefectoptError
from defectopt.models.formats import OPENVINO_XML


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
