"""Quantization: INT8 PTQ (OpenVINO/NNCF, ONNX Runtime QDQ, torch dynamic), BF16/FP16, QAT and the
auto policy (PTQ -> mixed precision -> QAT within a recall budget).

The entry point is `api.quantize_model(store, QuantizeOptions(...))`; the options live in
`options` (no torch). Each method is one small `api.QuantizeMethod` subclass.

    from defectopt.compress.quantize.api import quantize_model
    from defectopt.compress.quantize.options import QuantizeOptions
    outcome = quantize_model(store, QuantizeOptions(model="7", method="static"))
"""
