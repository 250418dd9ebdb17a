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

META_FILE = "meta.json"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
OPENVINO_XML = "model.xml"
TENSORRT_ENGINE = "model.plan"
TFLITE_FILE = "model.tflite"
INT8_LINEAR_FILE = "int8_linear.safetensors"
FLOAT_FILE = "float.safetensors"
FAKEQUANT_FILE = "fakequant.safetensors"  # activation ranges of a simulated low-bit model

FORMAT_TORCH = "torch"
FORMAT_PRUNED = "torch-pruned"
FORMAT_TORCH_INT8_DYNAMIC = "torch-int8-dynamic"
FORMAT_TORCH_BF16 = "torch-bf16"
FORMAT_TORCH_FP16 = "torch-fp16"
# low-bit QAT that no CPU runtime here executes: accuracy and packed size only, never timed
FORMAT_TORCH_LOWBIT_SIM = "torch-lowbit-sim"
FORMAT_ONNX = "onnx"
FORMAT_OPENVINO = "openvino"
FORMAT_TENSORRT = "tensorrt"
FORMAT_TFLITE = "tflite"


# The formats that rebuild into an FP32 nn.Module: the inputs of prune, quantize and export.
TORCH_FAMILY = (FORMAT_TORCH, FORMAT_PRUNED)
