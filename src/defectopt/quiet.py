"""Silence third-party chatter (torch.ao, NNCF, ONNX Runtime): our own messages say what matters."""

from __future__ import annotations

import contextlib
import logging
import warnings


def quiet_libraries() -> contextlib.AbstractContextManager:
    """Silence deprecation chatter of torch.ao / NNCF / ORT: our own messages say what matters."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    for name in ("nncf", "onnxruntime", "root"):
        lg = logging.getLogger(name if name != "root" else None)
        old = lg.level
        lg.setLevel(logging.ERROR)
        stack.callback(lg.setLevel, old)
    return stack
