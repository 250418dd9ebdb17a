"""`defectopt pipeline`: a whole study from one TOML config, as a sequence of ordinary commands.

teacher (finetune-teacher) → students with and without KD (distill α and α = 0) → pruning
(prune) → quantization (quantize: PTQ, with QAT where the auto policy needs it) → bench on the
chosen devices → the Pareto table, plot and Markdown report.

Each step builds the options dataclass of a library entry point from the config (the same
dataclass the CLI builds from flags, with the same defaults) and calls it, so it writes the
same rows a user's command would. Every model a step produces is tagged in its `config` JSON
with `pipeline_step = "<hash of the step's options>:<step name>"`; a re-run finds
tagged ready models and skips the step, so an interrupted study resumes where it stopped, and
changing one section of the config re-runs only the steps whose commands changed (and the
steps below them, whose parent IDs change). bench skips what is already measured by itself.

Stages (`--only` / `--skip` / `--plan`): a study of several hours runs in parts. A stage that is
not selected still *finds* its finished steps by key, so the stages below build on them, but it
runs nothing; its unfinished steps are reported as pending (with the steps below them, which need
their model IDs, left out). `--plan` selects no stage: it lists what is done and what is left.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defectopt.errors import DefectoptError
from defectopt.metrics import N
from defectopt.options import build, describe
from defectopt.steps import STEP_KEY, Executor, Step, run_step, step_key, tag, tagged_models
from defectopt.store.db import Store

BUNDLED = ("default", "neu-det", "mvtec-ad", "dagm", "study-neu-det", "study-mvtec-screw")

# Allowed keys per section and their defaults (None = required or "leave to the command").
SCHEMA: dict[str, dict[str, Any]] = {
    "study": {"name": "study", "data": None, "split_seed": 0, "seed": 0, "device": "auto", "pretrained": False,
              "img_size": None, "out": None, "quiet": False},
    # repeat_seeds: extra training runs of the same recipe with these seeds, benched beside the
    # main run (seed-to-seed spread) but never distilled from, pruned or quantized
    "teacher": {"model": None, "pretrained": None, "weights": None, "img_size": None, "epochs": 5, "batch_size": 32, "lr": None,
                "repeat_seeds": [], "options": {}},
    # reference teachers: fine-tuned and benched with the same data and split, not distilled from
    # (e.g. ViT-B/16 at 224 beside the teacher the students learn from)
    "references": {"model": None, "pretrained": None, "weights": None, "img_size": None, "epochs": 5, "batch_size": 32,
                   "lr": None, "repeat_seeds": [], "options": {}},
    "students": {"model": None, "alphas": [0.5, 0.0], "temperature": 4.0, "pretrained": None, "weights": None,
                 "img_size": None,
                 "epochs": 5, "batch_size": 32, "lr": None, "repeat_seeds": [], "options": {}},
    # models: only the sources of these aliases (e.g. the best KD student), [] = every source;
    # "alias@SIZE" narrows it to that input size (a study with the same student at several sizes).
    # [[prune]] may repeat: one table per recovery recipe (e.g. a short and a longer recovery)
    "prune": {"enabled": True, "from": ["kd"], "models": [], "ratios": [0.5], "method": "structured", "finetune_epochs": 2,
              "kd_from_teacher": True, "options": {}},
    "quantize": {"enabled": True, "from": ["prune"], "methods": ["auto"], "backend": None,
                 "max_recall_drop": None, "options": {}},
    "bench": {"devices": ["cpu"], "backends": ["auto"], "batch_sizes": [1, 16], "quick": False, "options": {}},
    "report": {"pareto": [N.recall, "latency"], "min_recall": None, "by": "latency", "plot_x": "latency",
               "plot_y": N.recall},
}
GROUPS = ("teacher", "references", "kd", "nokd", "students", "prune", "quantize")
# the study's stages in run order (what --only / --skip name)
STAGES = ("teacher", "references", "students", "prune", "quantize", "bench", "report")
LIST_SECTIONS = ("references", "students", "prune")  # [[...]] arrays of tables (one [table] is a list of one)
# what a missing section means: no references or students; one [prune] table of defaults (as
# before [[prune]] could repeat)
ABSENT: dict[str, Any] = {"references": [], "students": [], "prune": [{}]}


# --- config ---------------------------------------------------------------------------------

def bundled_config_text(name: str = "default") -> str:
    from defectopt import paths

    folder = paths.shipped_folder("configs", "default.toml")
    if folder is None:
        raise DefectoptError("cannot find the bundled pipeline configs (the repository's configs/ or the wheel's "
                             "defectopt/configs); reinstall defectopt")
    return (folder / f"{name}.toml").read_text(encoding="utf-8")


def load_config(path: str | Path | None = None) -> tuple[dict[str, Any], str]:
    """(validated config with defaults, where it came from). No path: the bundled default;
    a bundled name (`neu-det`, `mvtec-ad`, `dagm`) when no such file exists."""
    if path is None:
        text, origin = bundled_config_text("default"), "bundled default (synthetic data)"
    else:
        p = Path(path)
        if p.is_file():
            try:
                text, origin = p.read_text(encoding="utf-8"), str(p)
            except (OSError, UnicodeDecodeError) as exc:
                raise DefectoptError(f"cannot read pipeline config {p}: {exc}") from None
        elif str(path) in BUNDLED:
            text, origin = bundled_config_text(str(path)), f"bundled config '{path}'"
        else:
            raise DefectoptError(f"pipeline config {p} not found (bundled configs: {', '.join(BUNDLED)})")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DefectoptError(f"pipeline config {origin} is not valid TOML: {exc}") from None
    return validate_config(raw, origin), origin


def _check_keys(section: str, given: dict, origin: str) -> dict[str, Any]:
    known = SCHEMA[section]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise DefectoptError(f"pipeline config {origin}: unknown key(s) {', '.join(unknown)} in [{section}]; "
                             f"known: {', '.join(known)}")
    merged = {k: (json.loads(json.dumps(v)) if isinstance(v, (dict, list)) else v) for k, v in known.items()}
    merged.update(given)
    return merged


def validate_config(raw: dict[str, Any], origin: str = "config") -> dict[str, Any]:
    unknown = sorted(set(raw) - set(SCHEMA))
    if unknown:
        raise DefectoptError(f"pipeline config {origin}: unknown section(s) {', '.join(unknown)}; known: {', '.join(SCHEMA)}")
    cfg: dict[str, Any] = {}
    for section in SCHEMA:
        value = raw.get(section, ABSENT.get(section, {}))
        if section in LIST_SECTIONS:
            if isinstance(value, dict):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise DefectoptError(f"pipeline config {origin}: [[{section}]] must be tables")
            cfg[section] = [_check_keys(section, v, origin) for v in value]
        else:
            if not isinstance(value, dict):
                raise DefectoptError(f"pipeline config {origin}: [{section}] must be a table")
            cfg[section] = _check_keys(section, value, origin)
    if not cfg["study"]["data"]:
        raise DefectoptError(f"pipeline config {origin}: [study] data = \"SPEC\" is required (e.g. synthetic:400)")
    if not cfg["teacher"]["model"]:
        raise DefectoptError(f"pipeline config {origin}: [teacher] model = \"ALIAS\" is required")
    for section in ("references", "students"):
        for i, sec in enumerate(cfg[section]):
            if not sec["model"]:
                raise DefectoptError(f"pipeline config {origin}: [[{section}]] #{i + 1} needs model = \"ALIAS\"")
    for sec in (cfg["teacher"], *cfg["references"], *cfg["students"]):
        seeds = sec["repeat_seeds"]
        if not isinstance(seeds, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds):
            raise DefectoptError(f"pipeline config {origin}: repeat_seeds of {sec['model']} must be a list of integers, e.g. [1, 2]")
    for i, st in enumerate(cfg["students"]):
        if not isinstance(st["alphas"], list) or not st["alphas"]:
            raise DefectoptError(f"pipeline config {origin}: [[students]] alphas must be a non-empty list, e.g. [0.5, 0.0]")
    for section, table in (*(("prune", t) for t in cfg["prune"]), ("quantize", cfg["quantize"])):
        refs = table["from"]
        refs = [refs] if isinstance(refs, str) else refs
        bad = [r for r in refs if r not in GROUPS]
        if bad:
            raise DefectoptError(f"pipeline config {origin}: [{section}] from = {bad} ; use any of {', '.join(GROUPS)}")
        table["from"] = refs
    for table, key in (*((t, k) for t in cfg["prune"] for k in ("ratios", "models")), (cfg["quantize"], "methods"),
                       (cfg["bench"], "devices"), (cfg["bench"], "backends"), (cfg["bench"], "batch_sizes")):
        if not isinstance(table[key], list):
            table[key] = [table[key]]
    for table in cfg["prune"]:
        for name in table["models"]:
            parse_model_filter(str(name), origin)
    if len(cfg["report"]["pareto"]) != 2:
        raise DefectoptError(f"pipeline config {origin}: [report] pareto must name two metrics, e.g. [\"recall\", \"latency\"]")
    from defectopt import metrics

    for m in (*cfg["report"]["pareto"], cfg["report"]["plot_x"], cfg["report"]["plot_y"]):
        metrics.resolve(m)
    if not cfg["study"]["out"]:
        cfg["study"]["out"] = str(Path("reports") / cfg["study"]["name"])
    return cfg


def select_stages(only: str | Sequence[str] | None = None, skip: str | Sequence[str] | None = None) -> frozenset[str]:
    """The stages to run: every one, only those named, or all but those named (comma lists or repeats)."""
    def names(value: str | Sequence[str] | None, flag: str) -> list[str]:
        items = [value] if isinstance(value, str) else list(value or ())
        out = [n.strip() for item in items for n in str(item).split(",") if n.strip()]
        bad = [n for n in out if n not in STAGES]
        if bad:
            raise DefectoptError(f"{flag}: unknown stage(s) {', '.join(bad)}; stages: {', '.join(STAGES)}")
        if value is not None and not out:
            raise DefectoptError(f"{flag} needs at least one stage: {', '.join(STAGES)}")
        return out

    chosen, dropped = names(only, "--only"), names(skip, "--skip")
    if only is not None and skip is not None:
        raise DefectoptError("use --only or --skip, not both")
    if only is not None:
        return frozenset(chosen)
    return frozenset(STAGES) - set(dropped)


def parse_model_filter(text: str, origin: str = "config") -> tuple[str, int | None]:
    """'alias' -> (alias, None); 'alias@128' -> (alias, 128): [prune] models entries."""
    alias, at, size = text.partition("@")
    if not alias or (at and not size.isdigit()):
        raise DefectoptError(f"pipeline config {origin}: [prune] models entry '{text}' is not ALIAS or ALIAS@SIZE "
                             "(e.g. efficientnet_lite0@128)")
    return alias, (int(size) if at else None)


# --- steps ----------------------------------------------------------------------------------

@dataclass
class StepResult:
    name: str
    status: str  # ran | skipped (already done) | pending (not done, its stage not selected) | failed
    model_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0
    message: str = ""


@dataclass
class PipelineResult:
    config_origin: str
    dataset: str
    model_ids: list[int]
    steps: list[StepResult]
    outputs: dict[str, Path]
    frame: Any = None  # the tradeoff rows of the study, Pareto-marked
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[StepResult]:
        return [s for s in self.steps if s.status == "failed"]

    @property
    def pending(self) -> list[StepResult]:
        return [s for s in self.steps if s.status == "pending"]


class Study:
    """Runs the steps of one config against one store, printing one line per step."""

    def __init__(self, store: Store, cfg: dict[str, Any], *, origin: str = "config", quiet: bool = False,
                 echo: Callable[[str], None] = print, executor: Executor | None = None,
                 stages: frozenset[str] | None = None):
        self.store, self.cfg, self.origin = store, cfg, origin
        self.stages = frozenset(STAGES) if stages is None else frozenset(stages)
        self.quiet = quiet or bool(cfg["study"]["quiet"])
        self.echo = echo
        self.executor = executor or (lambda step: run_step(store, step, echo, quiet=self.quiet))
        self.steps: list[StepResult] = []
        self.groups: dict[str, list[int]] = {g: [] for g in GROUPS}
        self.model_ids: list[int] = []
        self.frame = None  # the study's tradeoff rows, Pareto-marked (set by outputs())

    def model_step(self, step: Step, stage: str) -> StepResult:
        """Run a model-producing step unless ready models already carry this step's key; a step of
        a stage that is not selected only finds its models (pending when there are none)."""
        key = step_key(step)
        t0 = time.perf_counter()
        existing = tagged_models(self.store, key)
        if existing:
            return self._keep(self._log(StepResult(step.name, "skipped", existing, 0.0, "already done")))
        if stage not in self.stages:
            return self.pending(step.name, f"stage '{stage}' not selected")
        self.echo(f"▶ {step.name}: {step.kind} {describe(step.options)}")
        try:
            ids = self.executor(step)
        except DefectoptError as exc:
            raise DefectoptError(f"pipeline step '{step.name}' failed: {exc}") from None
        except KeyboardInterrupt:
            self.echo(f"interrupted during '{step.name}'; run the same pipeline command again to resume")
            raise
        if not ids:
            raise DefectoptError(f"pipeline step '{step.name}' failed: it registered no ready model "
                                 f"({step.kind} {describe(step.options)})")
        tag(self.store, ids, key)
        return self._keep(self._log(StepResult(step.name, "ran", list(ids), time.perf_counter() - t0)))

    def pending(self, name: str, why: str) -> StepResult:
        self.echo(f"… {name}: pending ({why})")
        return self._keep(StepResult(name, "pending", [], 0.0, why))

    def _keep(self, result: StepResult) -> StepResult:
        self.steps.append(result)
        for i in result.model_ids:
            if i not in self.model_ids:
                self.model_ids.append(i)
        return result

    def _log(self, r: StepResult) -> StepResult:
        ids = ",".join(map(str, r.model_ids))
        if r.status == "skipped":
            self.echo(f"✓ {r.name}: skipped, already done (model {ids})")
        elif r.status == "ran":
            self.echo(f"✓ {r.name}: model {ids} in {r.seconds:.0f} s")
        return r

    # --- the study ---
    def run(self) -> PipelineResult:
        from defectopt.data.catalog import resolve_dataset

        st = self.cfg["study"]
        dataset = resolve_dataset(self.store, st["data"], seed=int(st["split_seed"]))
        self.echo(f"study '{st['name']}' on {dataset.name} ({len(dataset.manifest)} images, {dataset.task}) — config: {self.origin}")
        teacher = self.teacher_step()
        self.groups["teacher"] = [] if teacher is None else [teacher]
        self.reference_steps()
        self.student_steps(teacher)
        self.prune_steps(teacher)
        self.quantize_steps()
        self.bench_steps()
        outputs = self.outputs(dataset.name)
        return PipelineResult(self.origin, dataset.name, list(self.model_ids), self.steps, outputs, config=self.cfg)

    def _where(self, section: str) -> str:
        return f"pipeline config {self.origin}: [{section}] options"

    def _train_request(self, command: str, sec: dict[str, Any], section: str, seed: int | None, **extra: Any):
        from defectopt.train.options import RunRequest

        st = self.cfg["study"]
        pretrained = sec["pretrained"] if sec["pretrained"] is not None else st["pretrained"]
        values = {"command": command, "model": sec["model"], "split_seed": int(st["split_seed"]),
                  "img_size": sec["img_size"] or st["img_size"], "pretrained": bool(pretrained),
                  "weights": sec["weights"], "lr": sec["lr"], "epochs": sec["epochs"], "batch_size": sec["batch_size"],
                  "seed": st["seed"] if seed is None else seed, "device": str(st["device"]), "quiet": self.quiet,
                  **extra, **sec["options"]}
        return build(RunRequest, values, self._where(section))

    def _finetune(self, sec: dict[str, Any], what: str, section: str, seed: int | None = None) -> int | None:
        from defectopt.train.options import FINETUNE

        req = self._train_request(FINETUNE, sec, section, seed, data=self.cfg["study"]["data"])
        label = f"{what} {sec['model']}" + ("" if seed is None else f" (seed {seed})")
        return _last(self.model_step(Step(label, "finetune", req), section))

    def teacher_step(self) -> int | None:
        sec = self.cfg["teacher"]
        teacher = self._finetune(sec, "teacher", "teacher")
        for seed in sec["repeat_seeds"]:  # spread only: the chain below starts from the main run
            self._finetune(sec, "teacher", "teacher", seed)
        return teacher

    def reference_steps(self) -> None:
        for sec in self.cfg["references"]:
            ref = self._finetune(sec, "reference", "references")
            if ref is not None:
                self.groups["references"].append(ref)
            for seed in sec["repeat_seeds"]:
                self._finetune(sec, "reference", "references", seed)

    def student_steps(self, teacher: int | None) -> None:
        from defectopt.train.options import DISTILL

        seen: set[str] = set()
        for i, sec in enumerate(self.cfg["students"]):
            # a second entry of the same alias (another input size) says so in its step name; the
            # first keeps the plain name, so the keys of studies run before this existed still match
            size = sec["img_size"] or self.cfg["study"]["img_size"]
            at = "" if sec["model"] not in seen else (f" at {size} px" if size else f" (entry {i + 1})")
            seen.add(sec["model"])
            for alpha in sec["alphas"]:
                alpha = float(alpha)
                kind = f"KD α{alpha:g}" if alpha > 0 else "no-KD"
                for seed in [None, *sec["repeat_seeds"]]:
                    label = f"student {sec['model']}{at} [{kind}]" + ("" if seed is None else f" (seed {seed})")
                    if teacher is None:  # its step key holds the teacher's ID
                        self.pending(label, "needs the teacher, not trained yet")
                        continue
                    req = self._train_request(DISTILL, sec, "students", seed, teacher=str(teacher), alpha=alpha,
                                              temperature=float(sec["temperature"]))
                    mid = _last(self.model_step(Step(label, "distill", req), "students"))
                    if seed is None and mid is not None:  # the repeats measure spread; only the main run goes on
                        self.groups["kd" if alpha > 0 else "nokd"].append(mid)
                        self.groups["students"].append(mid)

    def _matches(self, model_id: int, filters: list[tuple[str, int | None]]) -> bool:
        """[] matches every model; else any parsed (alias, size or None) entry."""
        if not filters:
            return True
        from defectopt.store.schema import Model

        with self.store.session() as s:
            row = s.get(Model, model_id)
            alias, size = row.alias, row.img_size
        return any(want_alias == alias and want_size in (None, size) for want_alias, want_size in filters)

    def _sources(self, refs: list[str]) -> list[int]:
        out: list[int] = []
        for ref in refs:
            for mid in self.groups[ref]:
                if mid not in out:
                    out.append(mid)
        return out

    def prune_steps(self, teacher: int | None) -> None:
        from defectopt.compress.prune.options import PruneOptions

        st = self.cfg["study"]
        done: set[tuple[int, float]] = set()
        for sec in self.cfg["prune"]:
            if not sec["enabled"]:
                continue
            filters = [parse_model_filter(str(text), self.origin) for text in sec["models"]]
            for parent in self._sources(sec["from"]):
                if not self._matches(parent, filters):
                    continue
                for ratio in sec["ratios"]:
                    values = {"model": str(parent), "ratios": (float(ratio),), "method": sec["method"],
                              "finetune_epochs": int(sec["finetune_epochs"]), "seed": st["seed"], "device": str(st["device"]),
                              "split_seed": int(st["split_seed"]), "quiet": self.quiet}
                    name = f"prune model {parent} ratio {float(ratio):g}"
                    if sec["kd_from_teacher"] and sec["finetune_epochs"]:
                        if teacher is None:
                            self.pending(name, "needs the teacher, not trained yet")
                            continue
                        values["kd_from"] = str(teacher)
                    opts = build(PruneOptions, {**values, **sec["options"]}, self._where("prune"))
                    if (parent, float(ratio)) in done:  # a later recipe for the same cut names its recovery
                        name += f" (recovery {opts.finetune_epochs} ep, lr {opts.lr:g})"
                    done.add((parent, float(ratio)))
                    res = self.model_step(Step(name, "prune", opts), "prune")
                    self.groups["prune"].extend(res.model_ids)

    def quantize_steps(self) -> None:
        from defectopt.compress.quantize.options import QuantizeOptions

        sec = self.cfg["quantize"]
        if not sec["enabled"]:
            return
        refs = sec["from"]
        if refs == ["prune"] and not self.groups["prune"]:
            refs = ["kd"]  # no pruning in this study: quantize the KD students
        seed = self.cfg["study"]["seed"]
        for parent in self._sources(refs):
            for method in sec["methods"]:
                values: dict[str, Any] = {"model": str(parent), "method": str(method), "seed": seed,
                                          "qat": {"seed": seed, "quiet": self.quiet}}
                if sec["backend"]:
                    values["backend"] = str(sec["backend"])
                if sec["max_recall_drop"] is not None:
                    values["max_recall_drop"] = float(sec["max_recall_drop"])
                opts = build(QuantizeOptions, {**values, **sec["options"]}, self._where("quantize"))
                res = self.model_step(Step(f"quantize model {parent} {method}", "quantize", opts), "quantize")
                self.groups["quantize"].extend(res.model_ids)

    def bench_steps(self) -> None:
        import torch

        from defectopt.bench.options import BenchOptions

        sec = self.cfg["bench"]
        ids = ",".join(map(str, self.model_ids))
        if "bench" not in self.stages:
            self.pending("bench", "stage 'bench' not selected")
            return
        if not ids:
            self.echo("– bench: no model of the study is ready yet")
            return
        for device in sec["devices"]:
            if device == "cuda" and not torch.cuda.is_available():
                self.echo("– bench on cuda: skipped, no CUDA device here")
                self.steps.append(StepResult("bench cuda", "skipped", message="no CUDA device"))
                continue
            for backend in sec["backends"]:
                name = f"bench {device} {backend}"
                values = {"ids": ids, "device": device, "backend": backend,
                          "batch_sizes": tuple(int(b) for b in sec["batch_sizes"]), "quick": bool(sec["quick"])}
                opts = build(BenchOptions, {**values, **sec["options"]}, self._where("bench"))
                self.echo(f"▶ {name}: bench {describe(opts)} (already measured rows are skipped)")
                t0 = time.perf_counter()
                try:
                    code = self.executor(Step(name, "bench", opts))
                except DefectoptError as exc:
                    raise DefectoptError(f"pipeline step '{name}' failed: {exc}") from None
                if code:
                    # a model that cannot run on this backend is reported by bench; the others are measured
                    self.echo(f"! {name}: some runs failed (exit code {code}); continuing with what was measured")
                    self.steps.append(StepResult(name, "failed", [], time.perf_counter() - t0, f"exit code {code}"))
                else:
                    self.steps.append(StepResult(name, "ran", [], time.perf_counter() - t0))
                    self.echo(f"✓ {name} in {time.perf_counter() - t0:.0f} s")

    def outputs(self, dataset: str) -> dict[str, Path]:
        from defectopt.report import markdown, plots, table

        rep = self.cfg["report"]
        out_dir = Path(self.cfg["study"]["out"])
        if "report" not in self.stages:
            self.pending("report", "stage 'report' not selected")
            return {}
        frame = table.load_table(self.store, ids=self.model_ids)
        outputs: dict[str, Path] = {}
        if frame.empty:
            self.echo("nothing was benchmarked: no table, plot or report")
            return outputs
        from defectopt.report.pareto import pareto_mask

        marked = frame.assign(pareto=pareto_mask(frame, *rep["pareto"]))
        outputs["table_md"] = table.write_atomic(out_dir / "table.md", table.render(marked, "md", mark=True))
        outputs["table_csv"] = table.write_atomic(out_dir / "table.csv", table.render(marked, "csv", mark=True))
        for device, part in frame.groupby("device"):
            png = out_dir / f"pareto-{device}.png"
            try:
                outputs[f"plot_{device}"] = plots.write_tradeoff_plot(
                    part, rep["plot_x"], rep["plot_y"], png, title=f"{self.cfg['study']['name']}: {dataset} on {device}")
            except DefectoptError as exc:
                self.echo(f"! plot on {device}: {exc}")
        report = markdown.build_report(self.store, out_dir / "report.md", ids=self.model_ids,
                                       min_recall=rep["min_recall"], by=rep["by"],
                                       title=f"defectopt study '{self.cfg['study']['name']}'")
        outputs["report"] = report.path
        self.frame = marked
        return outputs


def _last(result: StepResult) -> int | None:
    """The model a training step produced (its last), None when the step is pending."""
    return result.model_ids[-1] if result.model_ids else None


def run_pipeline(store: Store, config: str | Path | dict[str, Any] | None = None, *, origin: str = "config",
                 quiet: bool = False, echo: Callable[[str], None] = print, executor: Executor | None = None,
                 stages: frozenset[str] | None = None) -> PipelineResult:
    """Run a study: `config` is a path, a bundled name, None (the bundled default) or a loaded config;
    `stages` (see select_stages) limits what runs, None = all."""
    if isinstance(config, dict):
        cfg = config
    else:
        cfg, origin = load_config(config)
    study = Study(store, cfg, origin=origin, quiet=quiet, echo=echo, executor=executor, stages=stages)
    result = study.run()
    result.frame = study.frame
    return result
