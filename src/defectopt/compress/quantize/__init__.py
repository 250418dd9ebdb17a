"""Quantization: dynamic/static INT8 PTQ, BF16/FP16, QAT, the auto policy, per-layer sensitivity.

One module per method (`dynamic`, `static`, `half`, `qat`), the `auto` policy, `sensitivity`
analysis; `common` holds what they share and `service.quantize_model` is the entry point:

    from defectopt.compress.quantize import QuantizeOptions, quantize_model
    outcome = quantize_model(store, "7", QuantizeOptions(method="static", backend="openvino"))

Each run creates a new model row (parent = the FP32 model, technique `quantize-<method>`) whose
artifact is in the format of the engine that executes it: `openvino` (NNCF INT8 / BF16 IR),
`onnx` (ORT static QDQ), or the torch formats of `models.torch_quantized` (`torch-int8-dynamic`,
`torch-bf16`, `torch-fp16`); heavy libraries load only when used.
"""

from __future__ import annotations


def __getattr__(name: str):
    # the service pulls in every method module: import it on first use only
    if name in ("QuantizeOptions", "QuantizeOutcome", "quantize_model", "METHODS", "BACKEND_CHOICES"):
        from defectopt.compress.quantize import service

        return getattr(service, name)
    if name == "QATConfig":
        from defectopt.compress.quantize.qat import QATConfig

        return QATConfig
    raise AttributeError(name)


__all__ = ["QATConfig", "QuantizeOptions", "QuantizeOutcome", "quantize_model"]
