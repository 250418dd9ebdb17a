"""Artifact formats: each format's name and payload files are defined here, once.

A format is what an artifact folder holds besides `meta.json`: the torch family (safetensors
weights rebuilt onto a registry architecture, pruned or quantized variants of it) and the
deployment runtimes' files (ONNX, OpenVINO IR, TensorRT engine). Code that writes or reads a
format imports its name from here. Loaders and runners register themselves against these names
(timm's pattern: the registry imports no registrant): the torch loaders from `models.artifacts`,
`models.pruned` and `models.torch_quantized` (imported by `defectopt.models`), the runners from
`bench.runners`.
"""

from __future__ import annotations

from dataclasses import dataclass

META_FILE = "meta.json"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
OPENVINO_XML = "model.xml"
OPENVINO_BIN = "model.bin"
TENSORRT_ENGINE = "model.plan"
INT8_LINEAR_FILE = "int8_linear.safetensors"
FLOAT_FILE = "float.safetensors"

FORMAT_TORCH = "torch"
FORMAT_PRUNED = "torch-pruned"
FORMAT_TORCH_INT8_DYNAMIC = "torch-int8-dynamic"
FORMAT_TORCH_BF16 = "torch-bf16"
FORMAT_TORCH_FP16 = "torch-fp16"
FORMAT_ONNX = "onnx"
FORMAT_OPENVINO = "openvino"
FORMAT_TENSORRT = "tensorrt"


@dataclass(frozen=True)
class Format:
    name: str
    payload: tuple[str, ...]  # files of the deployable model (besides meta.json)
    fp32_source: bool  # an FP32 torch module that compress/export can start from
    summary: str


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format(FORMAT_TORCH, (WEIGHTS_FILE,), True, "timm architecture + safetensors weights"),
    Format(FORMAT_PRUNED, (WEIGHTS_FILE,), True, "structurally pruned timm model: stored shapes + safetensors"),
    Format(FORMAT_TORCH_INT8_DYNAMIC, (INT8_LINEAR_FILE, FLOAT_FILE), False, "torch.ao dynamic INT8 Linear layers"),
    Format(FORMAT_TORCH_BF16, (WEIGHTS_FILE,), False, "bf16 state dict, eager torch"),
    Format(FORMAT_TORCH_FP16, (WEIGHTS_FILE,), False, "fp16 state dict, eager torch (CUDA)"),
    Format(FORMAT_ONNX, (ONNX_FILE,), False, "ONNX graph (FP32 or QDQ INT8)"),
    Format(FORMAT_OPENVINO, (OPENVINO_XML, OPENVINO_BIN), False, "OpenVINO IR (FP32, BF16 hint or NNCF INT8)"),
    Format(FORMAT_TENSORRT, (TENSORRT_ENGINE,), False, "TensorRT engine (CUDA)"),
)}

# The formats that rebuild into an FP32 nn.Module: the inputs of prune, quantize and export.
TORCH_FAMILY = tuple(name for name, f in FORMATS.items() if f.fp32_source)
