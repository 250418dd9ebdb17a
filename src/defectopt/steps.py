"""Steps: one call of a library entry point (`kind` + its options dataclass), the key that says
whether an equal call already produced ready models, and the call itself.

`pipeline` and `search` both build studies out of steps; this is the one place that knows how a
step maps to an entry point and how a finished step is found again (a tag in the model row's
`config` JSON), so a study re-run or a search trial reuses models instead of retraining them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from defectopt.errors import DefectoptError
from defectopt.store.db import Store

STEP_KEY = "pipeline_step"


@dataclass(frozen=True)
class Step:
    """One call of a library entry point: `kind` names it, `options` is its options dataclass."""

    name: str
    kind: str  # finetune | distill | prune | quantize | bench
    options: Any


def step_key(step: Step) -> str:
    """Hash of what the step computes (its kind and every option), then its name. Options that do
    not change the result (verbosity) are left out, so `--quiet` does not re-run a study."""
    data = dataclasses.asdict(step.options)
    _drop_quiet(data)
    _drop_legacy_values(step.options, data)
    digest = hashlib.sha256(json.dumps([step.name, step.kind, data], sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{digest}:{step.name}"


def _drop_legacy_values(options: Any, data: dict[str, Any]) -> None:
    from defectopt.options import at_legacy_values

    for name in at_legacy_values(options):
        data.pop(name, None)


def _drop_quiet(data: dict[str, Any]) -> None:
    data.pop("quiet", None)
    for value in data.values():
        if isinstance(value, dict):
            _drop_quiet(value)


def tagged_models(store: Store, key: str) -> list[int]:
    from sqlalchemy import select

    from defectopt.store.schema import Model, ModelStatus

    with store.session() as s:
        q = select(Model.id).where(Model.status == ModelStatus.READY, Model.config[STEP_KEY].as_string() == key)
        return list(s.scalars(q.order_by(Model.id)))


def tag(store: Store, ids: list[int], key: str) -> None:
    from defectopt.store.schema import Model

    with store.session() as s:
        for model_id in ids:
            row = s.get(Model, model_id)
            row.config = {**(row.config or {}), STEP_KEY: key}  # new dict: JSON columns track assignment only


Executor = Callable[[Step], "list[int] | int"]


def run_step(store: Store, step: Step, echo: Callable[[str], None] = print, *, quiet: bool = False,
             on_epoch: Callable[[dict[str, Any]], None] | None = None) -> list[int] | int:
    """Call the step's entry point: the ready models it made, or bench's exit code.
    on_epoch: the training steps' per-epoch hook (train.engine.EpochHook)."""
    if step.kind == "finetune":
        from defectopt.train.api import finetune_teacher

        return [finetune_teacher(store, step.options, echo=echo, on_epoch=on_epoch).model_id]
    if step.kind == "distill":
        from defectopt.train.api import distill

        return [distill(store, step.options, echo=echo, on_epoch=on_epoch).model_id]
    if step.kind == "prune":
        from defectopt.compress.prune.api import prune_models

        return [r.model_id for r in prune_models(store, step.options, on_result=lambda r: echo(r.line()))]
    if step.kind == "quantize":
        from defectopt.compress.quantize.api import quantize_model

        out = quantize_model(store, step.options, log=echo)
        for note in out.notes:
            echo(f"note: {note}")
        return [r.model_id for r in out.results]
    if step.kind == "bench":
        from defectopt.bench import api

        outcomes = api.run_bench(store, step.options, step=lambda m: None if quiet else echo(m),
                                 on_outcome=lambda o: echo(o.line()), on_note=lambda m: echo(f"note: {m}"))
        return api.exit_code(outcomes)
    raise DefectoptError(f"unknown pipeline step kind '{step.kind}'")
