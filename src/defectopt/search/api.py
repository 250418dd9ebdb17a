"""`defectopt search`: a hardware-aware multi-objective search for the fastest model that keeps
recall, measured on the machine it runs on.

Each trial samples a plan (student, input size, KD α/T, prune ratio, INT8 method, runtime,
keep-fp) and builds it with the ordinary entry points (distill → prune → quantize), so its
models are ordinary rows with lineage; a step whose options were already run reuses that model
(`steps.step_key`). The trial's model is then scored on the **val** split and timed in its
runtime on this device (`bench.validation`). Optuna (TPE or NSGA-II, multi-objective) maximizes
val recall and minimizes latency (and optionally size); the recall floor is a constraint
(a trial constraint), so infeasible trials steer the sampler but never enter the answer.

The study lives in Optuna's RDB storage, a SQLite file beside the results DB
(`<db>.search.sqlite`; not the results DB itself: Optuna keeps its own Alembic version table).
A trial left RUNNING by a killed process is marked failed on resume and its plan re-queued; its
finished steps are reused. After the trials, the val Pareto set of feasible trials is measured
once on the frozen test split by `bench`, and the answer is the fastest of those whose test recall
CI lower bound is at least the floor. The test split is read by nothing before that step.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defectopt.errors import DefectoptError
from defectopt.search.early_stop import Curve, decide
from defectopt.search.options import SearchOptions
from defectopt.search.space import Plan, prune_step, quantize_step, sample_plan, student_step
from defectopt.steps import Step, run_step, step_key, tag, tagged_models
from defectopt.store.db import Store

STORAGE_SUFFIX = ".search.sqlite"
RECALL_FLOOR = "recall_floor"  # the constraint's name in the Optuna trial
MAX_FAILS_IN_A_ROW = 3  # a search whose every trial fails is a bug or a bad space: stop, say why
# Study settings that must match when a search is resumed (else its trials are not comparable).
FIXED_ATTRS = ("teacher_id", "min_recall", "objectives", "batch_size", "device", "space")

Echo = Callable[[str], None]


@dataclass
class TrialRecord:
    """One trial as the live table shows it."""

    number: int
    state: str  # running | complete | pruned | failed
    plan: str = ""
    model_id: int | None = None
    recall: float | None = None
    latency_ms: float | None = None
    size_mb: float | None = None
    feasible: bool | None = None
    reused: int = 0  # steps whose model already existed
    seconds: float = 0.0
    note: str = ""


@dataclass
class Confirmed:
    """A val-Pareto model measured on the frozen test split by bench."""

    trial: int
    model_id: int
    backend: str
    plan: str
    val_recall: float
    val_latency_ms: float
    test_recall: float | None
    test_recall_ci_low: float | None
    test_recall_ci_high: float | None
    test_latency_ms: float | None
    size_mb: float | None
    interleaved_ms: float | None = None  # ms/image timed side by side with the others (the fair ranking)


@dataclass
class SearchOutcome:
    name: str
    storage: Path
    trials: list[TrialRecord]
    front: list[TrialRecord]  # feasible val Pareto set
    confirmed: list[Confirmed] = field(default_factory=list)
    answer: Confirmed | None = None
    answer_line: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # wall, train, bench, confirm, overhead
    plot: Path | None = None
    trials_csv: Path | None = None
    ran: int = 0  # trials run by this invocation
    references: list[Confirmed] = field(default_factory=list)  # --compare models, measured the same way
    interleaved: Any = None  # bench.validation.InterleavedTiming of the confirmed set and the references

    @property
    def overhead_fraction(self) -> float | None:
        wall = self.seconds.get("wall", 0.0)
        return self.seconds.get("overhead", 0.0) / wall if wall > 0 else None


def storage_path(store: Store) -> Path:
    return Path(store.path).with_name(Path(store.path).name + STORAGE_SUFFIX)


def _storage(store: Store):
    import optuna

    url = f"sqlite:///{storage_path(store)}"
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}})


def default_name(teacher_id: int, min_recall: float) -> str:
    return f"search-t{teacher_id}-r{min_recall:g}"


def _directions(objectives: tuple[str, ...]) -> list[str]:
    return ["maximize" if o == "recall" else "minimize" for o in objectives]


def _sampler(opts: SearchOptions):
    import optuna

    if opts.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=max(2, opts.startup_trials), seed=opts.seed)
    return optuna.samplers.TPESampler(n_startup_trials=opts.startup_trials, seed=opts.seed, multivariate=True)


def _fixed_attrs(opts: SearchOptions, teacher_id: int) -> dict[str, Any]:
    return {"teacher_id": teacher_id, "min_recall": opts.min_recall, "objectives": list(opts.objectives),
            "batch_size": opts.batch_size, "device": opts.device,
            "space": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(opts.space).items()}}


def _open_study(store: Store, opts: SearchOptions, name: str, teacher_id: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(store)
    names = {s.study_name for s in optuna.study.get_all_study_summaries(storage)}
    if opts.resume and name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise DefectoptError(f"no search named '{name}' in {storage_path(store)} (searches: {known})")
    if not opts.resume and name in names:
        raise DefectoptError(f"a search named '{name}' already exists; continue it with --resume {name}, "
                             "or start another with --name NEW")
    study = optuna.create_study(storage=storage, study_name=name, directions=_directions(opts.objectives),
                                sampler=_sampler(opts), load_if_exists=opts.resume)
    fixed = _fixed_attrs(opts, teacher_id)
    if opts.resume:
        stored = study.user_attrs
        diff = [k for k in FIXED_ATTRS if k in stored and stored[k] != fixed[k]]
        if diff:
            raise DefectoptError(f"search '{name}' was started with other settings ({', '.join(diff)}); "
                                 "resume it with the same ones, or start another with --name NEW")
    else:
        for key, value in fixed.items():
            study.set_user_attr(key, value)
    return study


def _release_stale(store: Store, study, echo: Echo) -> int:
    """Trials left RUNNING by a process that no longer exists: mark them failed (interrupted),
    mark that process's unfinished model rows failed, and queue each plan again."""
    import psutil
    from optuna.trial import TrialState

    from defectopt.models.artifacts import mark_failed, stale_rows

    storage = study._storage
    count = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if pid is not None and pid != os.getpid() and psutil.pid_exists(pid):
            continue  # another live process is running it
        storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        for row in stale_rows(store):
            if row.pid == pid:
                mark_failed(store, row.id, f"interrupted: the search process {pid} ended during trial {t.number}")
        if t.params:  # killed before it sampled anything: nothing to retry
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        count += 1
    if count:
        echo(f"{count} interrupted trial(s) failed and queued again; their finished steps are reused")
    return count


def _finished(study) -> list:
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [t for t in study.get_trials(deepcopy=False, states=done) if not t.user_attrs.get("interrupted")]


def _record(t) -> TrialRecord:
    a = t.user_attrs
    state = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}.get(t.state.name, t.state.name.lower())
    return TrialRecord(t.number, state, a.get("plan_label", ""), a.get("model_id"), a.get("val_recall"),
                       a.get("latency_ms"), a.get("size_mb"), a.get("feasible"), a.get("reused", 0),
                       a.get("seconds", {}).get("total", 0.0), a.get("reason", ""))


def val_front(study) -> list:
    """Optuna's Pareto front of the feasible complete trials (`Study.best_trials` honours the
    recall-floor constraint every complete trial sets), one entry per model + runtime (two trials
    can reach the same model), fastest first."""
    seen, out = set(), []
    for t in sorted(study.best_trials, key=lambda t: t.user_attrs["latency_ms"]):
        key = (t.user_attrs["model_id"], t.user_attrs["backend"])
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


class _Clock:
    """Wall time split into training (distill/prune/quantize), benchmarking (val scoring and
    timing) and confirmation; the rest is the search's own overhead."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.parts = {"train": 0.0, "bench": 0.0, "confirm": 0.0}

    def add(self, part: str, seconds: float) -> None:
        self.parts[part] += seconds

    def summary(self) -> dict[str, float]:
        wall = time.perf_counter() - self.start
        return {"wall": wall, **self.parts, "overhead": max(0.0, wall - sum(self.parts.values()))}


class _Trial:
    """Runs one trial's plan; raises _Pruned when the early-stopping rule (or an earlier stop of
    the same student settings) ends it."""

    def __init__(self, search: _Search, trial) -> None:
        self.search, self.trial = search, trial
        self.reused = 0
        self.seconds = {"train": 0.0, "bench": 0.0}

    def model_for(self, step: Step, on_epoch=None) -> int:
        key = step_key(step)
        existing = tagged_models(self.search.store, key)
        if existing:
            self.reused += 1
            return existing[-1]
        t0 = time.perf_counter()
        try:
            ids = run_step(self.search.store, step, self.search.quiet_echo, quiet=True, on_epoch=on_epoch)
        finally:
            elapsed = time.perf_counter() - t0
            self.seconds["train"] += elapsed
            self.search.clock.add("train", elapsed)
        if not ids:
            raise DefectoptError(f"{step.kind} registered no ready model")
        tag(self.search.store, ids, key)
        return ids[-1]

    def run(self) -> tuple[float, ...]:
        from defectopt.bench.timing import TimingConfig
        from defectopt.bench.validation import measure_on_val
        from defectopt.train.engine import StopTraining

        s, opts, trial = self.search, self.search.opts, self.trial
        plan = sample_plan(trial, opts.space)
        trial.set_user_attr("plan", dataclasses.asdict(plan))
        trial.set_user_attr("plan_label", plan.label())
        s.emit(TrialRecord(trial.number, "running", plan.label()))
        stopped = s.stopped_students.get(plan.student_part())
        if stopped:
            raise _Pruned(f"the same student settings were stopped in trial {stopped[0]}: {stopped[1]}")
        step = student_step(plan, opts.space, opts, s.teacher_id)
        hook = s.early_stop_hook() if opts.early_stop else None
        try:
            model_id = self.model_for(step, on_epoch=hook)
        except StopTraining as exc:
            s.stopped_students[plan.student_part()] = (trial.number, str(exc))
            trial.set_user_attr("student_stopped", True)
            raise _Pruned(str(exc)) from None
        trial.set_user_attr("student_id", model_id)
        s.add_curve(model_id, f"trial {trial.number} (model {model_id})")
        if plan.prune_ratio > 0:
            model_id = self.model_for(prune_step(plan, opts.space, opts, model_id, s.teacher_id))
        if plan.quantize != "none":
            model_id = self.model_for(quantize_step(plan, opts.space, opts, model_id, s.teacher_id))
        trial.set_user_attr("model_id", model_id)
        trial.set_user_attr("backend", plan.backend)
        t0 = time.perf_counter()
        m = measure_on_val(s.store, model_id, device=opts.device, backend=plan.backend, batch_size=opts.batch_size,
                           threads=opts.threads, timing=TimingConfig(min_iters=opts.min_iters, min_seconds=opts.min_time))
        elapsed = time.perf_counter() - t0
        self.seconds["bench"] += elapsed
        s.clock.add("bench", elapsed)
        feasible = m.recall >= opts.min_recall
        for key, value in (("val_recall", m.recall), ("val_min_class_recall", m.min_class_recall),
                           ("val_defects", m.val_defects), ("latency_ms", m.latency_ms),
                           ("latency_p10_ms", m.latency_p10_ms), ("latency_p90_ms", m.latency_p90_ms),
                           ("size_mb", m.size_mb), ("precision", m.precision), ("contended", m.contended),
                           ("feasible", feasible)):
            trial.set_user_attr(key, value)
        # The floor is a constraint, not an objective: <= 0 is feasible. Both samplers rank
        # infeasible trials below every feasible one (constrained domination), so a fast model
        # that misses defects steers the search away but never wins. (Optuna 5 reads constraints
        # set on the trial; its `constraints_func` argument is deprecated.)
        trial.set_constraint(RECALL_FLOOR, opts.min_recall - m.recall)
        values = {"recall": m.recall, "latency": m.latency_ms, "size": m.size_mb}
        return tuple(values[o] for o in opts.objectives)


class _Pruned(Exception):
    pass


class _Search:
    def __init__(self, store: Store, opts: SearchOptions, echo: Echo, on_trial: Callable[[TrialRecord], None] | None):
        self.store, self.opts, self.echo = store, opts, echo
        self.on_trial = on_trial
        self.quiet_echo: Echo = (lambda _m: None) if opts.quiet else echo
        self.clock = _Clock()
        self.curves: dict[int, Curve] = {}  # student model id -> its val-recall curve
        self.stopped_students: dict[tuple, tuple[int, str]] = {}
        self.teacher_id = 0

    def emit(self, record: TrialRecord) -> None:
        if self.on_trial is not None:
            self.on_trial(record)

    def add_curve(self, model_id: int, source: str) -> None:
        if model_id in self.curves:  # a reused student: its curve is already known
            return
        from sqlalchemy import select

        from defectopt.store.schema import TrainEpoch

        with self.store.session() as s:
            rows = s.execute(select(TrainEpoch.epoch, TrainEpoch.val_recall)
                             .where(TrainEpoch.model_id == model_id).order_by(TrainEpoch.epoch)).all()
        recalls = tuple(float(r.val_recall) for r in rows if r.val_recall is not None)
        if recalls:
            self.curves[model_id] = Curve(source, recalls)

    def early_stop_hook(self):
        from defectopt.train.engine import StopTraining

        floor, epochs, curves = self.opts.min_recall, self.opts.space.epochs, list(self.curves.values())
        min_curves = self.opts.early_stop_min_curves

        def hook(row: dict[str, Any]) -> None:
            d = decide(float(row["val_recall"]), int(row["epoch"]), epochs, floor, curves, min_curves)
            if d.stop:
                raise StopTraining(f"search stopped this run early: {d.reason}")

        return hook

    def resolve_teacher(self) -> int:
        from defectopt.models.artifacts import load_artifact
        from defectopt.models.catalog import resolve_model_ref

        teacher_id = resolve_model_ref(self.store, self.opts.teacher)
        load_artifact(self.store, teacher_id)  # one line if it is not ready
        return teacher_id

    def restore(self, study) -> None:
        """Curves and stopped students of earlier invocations of this search."""
        from optuna.trial import TrialState

        for t in study.get_trials(deepcopy=False):
            if t.user_attrs.get("student_id") is not None:
                self.add_curve(t.user_attrs["student_id"], f"trial {t.number} (model {t.user_attrs['student_id']})")
            if t.state == TrialState.PRUNED and t.user_attrs.get("student_stopped"):
                plan = Plan(**t.user_attrs["plan"])
                self.stopped_students.setdefault(plan.student_part(), (t.number, t.user_attrs.get("reason", "")))

    def run(self) -> SearchOutcome:
        import optuna
        from optuna.trial import TrialState

        self.opts.validate()
        self.teacher_id = self.resolve_teacher()
        name = self.opts.name or default_name(self.teacher_id, self.opts.min_recall)
        study = _open_study(self.store, self.opts, name, self.teacher_id)
        _release_stale(self.store, study, self.echo)
        self.restore(study)
        max_trials = self.opts.max_trials
        deadline = None if self.opts.time_budget is None else time.monotonic() + self.opts.time_budget
        done = len(_finished(study))
        if done:
            self.echo(f"search '{name}': {done} trial(s) already finished" + (f" of {max_trials}" if max_trials else ""))
        ran, fails_in_a_row = 0, 0
        while (max_trials is None or done < max_trials) and (deadline is None or time.monotonic() < deadline):
            trial = study.ask()
            trial.set_user_attr("pid", os.getpid())
            runner = _Trial(self, trial)
            t0 = time.perf_counter()
            state, values, reason = TrialState.COMPLETE, None, ""
            try:
                values = runner.run()
            except _Pruned as exc:
                state, reason = TrialState.PRUNED, str(exc)
            except KeyboardInterrupt:
                trial.set_user_attr("interrupted", True)
                study.tell(trial, state=TrialState.FAIL)
                if trial.params:
                    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
                self.echo(f"interrupted in trial {trial.number}; continue with --resume {name}")
                raise
            except (DefectoptError, RuntimeError, ValueError, OSError) as exc:
                state, reason = TrialState.FAIL, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            trial.set_user_attr("reused", runner.reused)
            trial.set_user_attr("seconds", {**runner.seconds, "total": time.perf_counter() - t0})
            if reason:
                trial.set_user_attr("reason", reason)
            if state == TrialState.PRUNED:  # stopped below the floor: infeasible by the rule that stopped it
                trial.set_constraint(RECALL_FLOOR, 1.0)
            study.tell(trial, values if state == TrialState.COMPLETE else None, state=state)
            done, ran = done + 1, ran + 1
            record = _record(study.get_trials(deepcopy=False)[trial.number])
            self.emit(record)
            fails_in_a_row = fails_in_a_row + 1 if state == TrialState.FAIL else 0
            if fails_in_a_row >= MAX_FAILS_IN_A_ROW:
                raise DefectoptError(f"search '{name}': {fails_in_a_row} trials in a row failed; last: {reason}")
        if deadline is not None and time.monotonic() >= deadline:
            self.echo(f"time budget reached after {ran} trial(s) in this run")
        records = [_record(t) for t in study.get_trials(deepcopy=False)
                   if t.state != optuna.trial.TrialState.WAITING]
        front = val_front(study)
        outcome = SearchOutcome(name, storage_path(self.store), records, [_record(t) for t in front], ran=ran)
        if self.opts.confirm and front:
            self.confirm(front, outcome)
        elif not front:
            outcome.answer_line = (f"no trial reached val recall ≥ {self.opts.min_recall:g}; "
                                   f"best val recall: {max((r.recall for r in records if r.recall is not None), default=float('nan')):.3f}")
        outcome.seconds = self.clock.summary()
        outcome.trials_csv = self.write_trials(study, outcome)
        return outcome

    def write_trials(self, study, outcome: SearchOutcome) -> Path:
        """Every trial with its plan, figures and reason, as CSV beside the plot (atomic)."""
        import csv
        import io

        from defectopt.report.table import write_atomic

        plan_keys = [f.name for f in dataclasses.fields(Plan)]
        cols = ["trial", "state", *plan_keys, "model_id", "val_recall", "val_min_class_recall", "latency_ms",
                "latency_p10_ms", "latency_p90_ms", "size_mb", "feasible", "contended", "reused", "seconds", "reason"]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        writer.writeheader()
        for t in study.get_trials(deepcopy=False):
            a = t.user_attrs
            row = {"trial": t.number, "state": t.state.name.lower(), **(a.get("plan") or {}),
                   **{k: a.get(k) for k in cols if k in a and k not in ("plan", "seconds")},
                   "seconds": round(a.get("seconds", {}).get("total", 0.0), 1), "reason": a.get("reason", "")}
            writer.writerow({k: row.get(k, "") for k in cols})
        return write_atomic(Path(self.opts.out or Path("reports") / outcome.name) / "trials.csv", buf.getvalue())

    # --- the only step that reads the test split ---
    def references(self) -> list[tuple[int, str]]:
        from defectopt.bench.runners import native_backend
        from defectopt.models.artifacts import load_artifact

        refs = []
        for text in self.opts.compare:
            model_id, _, backend = text.partition(":")
            art = load_artifact(self.store, int(model_id))  # one line if unknown or not ready
            refs.append((art.id, backend or native_backend(art.format) or "openvino"))
        return refs

    def confirm(self, front: list, outcome: SearchOutcome) -> None:
        from defectopt.bench.api import run_bench
        from defectopt.bench.options import BenchOptions
        from defectopt.bench.validation import time_interleaved
        from defectopt.models.catalog import lineage_label

        refs = self.references()
        self.echo(f"confirming the val Pareto set ({len(front)} model(s)) on the frozen test split"
                  + (f", with {len(refs)} reference model(s)" if refs else ""))
        t0 = time.perf_counter()
        # bench's own defaults otherwise (binary: the recall-critical threshold for its target recall),
        # so these rows are the ones `table` shows for the same models
        by_backend: dict[str, list[int]] = {}
        for model_id, backend in [(t.user_attrs["model_id"], t.user_attrs["backend"]) for t in front] + refs:
            by_backend.setdefault(backend, []).append(model_id)
        for backend, ids in by_backend.items():
            opts = BenchOptions(ids=",".join(map(str, dict.fromkeys(ids))), device=self.opts.device, backend=backend,
                                batch_sizes=tuple(dict.fromkeys((1, self.opts.batch_size))), threads=self.opts.threads,
                                memory=False, roofline=False, seed=self.opts.seed)
            for o in run_bench(self.store, opts, on_outcome=lambda o: self.quiet_echo(o.line())):
                if o.status == "failed":
                    self.echo(f"note: bench failed for model {o.model_id} [{o.backend}]: {o.message}")
        for t in front:
            a = t.user_attrs
            outcome.confirmed.append(self._confirmed(t.number, a["model_id"], a["backend"], a["plan_label"],
                                                     a["val_recall"], a["latency_ms"]))
        for model_id, backend in refs:
            outcome.references.append(self._confirmed(-1, model_id, backend, lineage_label(self.store, model_id),
                                                      None, None))
        pairs = list(dict.fromkeys([(c.model_id, c.backend) for c in outcome.confirmed + outcome.references]))
        if len(pairs) >= 2:
            self.echo(f"timing {len(pairs)} model(s) interleaved in one process at batch {self.opts.batch_size}")
            it = time_interleaved(self.store, pairs, device=self.opts.device, batch_size=self.opts.batch_size,
                                  threads=self.opts.threads)
            outcome.interleaved = it
            for c in outcome.confirmed + outcome.references:
                c.interleaved_ms = it.median_ms[f"{c.model_id}:{c.backend}"]
        self.clock.add("confirm", time.perf_counter() - t0)
        self._answer(outcome)
        outcome.plot = self.plot(outcome)

    def _confirmed(self, trial: int, model_id: int, backend: str, plan: str, val_recall, val_ms) -> Confirmed:
        test = _test_figures(self.store, model_id, self.opts.device, backend, self.opts.batch_size)
        return Confirmed(trial, model_id, backend, plan, val_recall, val_ms, test.get("recall"), test.get("recall_ci_low"),
                         test.get("recall_ci_high"), test.get("latency_ms"), test.get("size_mb"))

    def _answer(self, outcome: SearchOutcome) -> None:
        floor = self.opts.min_recall

        def speed(c: Confirmed) -> float:
            value = c.interleaved_ms if c.interleaved_ms is not None else c.test_latency_ms
            return value if value is not None else float("inf")

        ok = [c for c in outcome.confirmed if c.test_recall_ci_low is not None and c.test_recall_ci_low >= floor]
        how = "interleaved" if outcome.interleaved is not None else "bench"
        if ok:
            best = min(ok, key=speed)
            outcome.answer = best
            line = (f"fastest model whose test recall CI lower bound ≥ {floor:g}: model {best.model_id} "
                    f"[{best.backend}] {best.plan} — test recall {best.test_recall:.3f} "
                    f"[{best.test_recall_ci_low:.3f}, {best.test_recall_ci_high:.3f}], "
                    f"{speed(best):.3g} ms/image at batch {self.opts.batch_size} ({how})")
            it = outcome.interleaved
            for ref in outcome.references:
                a, b = f"{ref.model_id}:{ref.backend}", f"{best.model_id}:{best.backend}"
                if it is not None and a != b:
                    sp = it.speedups[(a, b)]
                    line += (f"; vs model {ref.model_id} [{ref.backend}] (test recall {_fmt3(ref.test_recall)} "
                             f"[{_fmt3(ref.test_recall_ci_low)}, {_fmt3(ref.test_recall_ci_high)}]): "
                             f"{sp['speedup']:.2f}× faster (p10–p90 {sp['p10']:.2f}–{sp['p90']:.2f}, interleaved)")
            if it is not None and it.contended:
                line += "; timed under contention: re-run on a quiet machine"
            outcome.answer_line = line
        else:
            lows = [c for c in outcome.confirmed if c.test_recall_ci_low is not None]
            top = max(lows, key=lambda c: c.test_recall_ci_low, default=None)
            outcome.answer_line = (f"no val-Pareto model has a test recall CI lower bound ≥ {floor:g}"
                                   + (f"; the highest is {top.test_recall_ci_low:.3f} (model {top.model_id}, test recall "
                                      f"{top.test_recall:.3f})" if top else ""))

    def plot(self, outcome: SearchOutcome) -> Path | None:
        from defectopt.report.plots import tradeoff_plot_png
        from defectopt.report.table import write_atomic
        from defectopt.store.queries import tradeoff_frame

        shown = outcome.confirmed + outcome.references
        frame = tradeoff_frame(self.store, device=self.opts.device, ids=sorted({c.model_id for c in shown}))
        frame = frame[[(r["id"], r["backend"]) in {(c.model_id, c.backend) for c in shown} for _, r in frame.iterrows()]]
        if frame.empty:
            return None
        out = Path(self.opts.out or Path("reports") / outcome.name)
        png = tradeoff_plot_png(frame, "latency", "recall", title=f"search '{outcome.name}': val Pareto set on test")
        return write_atomic(out / "pareto.png", png)


def _fmt3(value: float | None) -> str:
    return "?" if value is None else f"{value:.3f}"


def _test_figures(store: Store, model_id: int, device: str, backend: str, batch_size: int) -> dict[str, float]:
    """The newest test-split task rows and the timed latency at `batch_size` bench wrote."""
    from sqlalchemy import select

    from defectopt.metrics import N
    from defectopt.store.schema import Measurement

    wanted = {N.recall: 0, N.recall_ci_low: 0, N.recall_ci_high: 0, N.size_mb: 0, N.latency_ms: batch_size}
    out: dict[str, float] = {}
    with store.session() as s:
        for metric, batch in wanted.items():
            row = s.execute(select(Measurement.value).where(
                Measurement.model_id == model_id, Measurement.device == device, Measurement.backend == backend,
                Measurement.metric == metric, Measurement.batch_size == batch).order_by(Measurement.id.desc())).first()
            if row is not None and row.value is not None:
                out[metric] = float(row.value)
    return out


def run_search(store: Store, opts: SearchOptions, *, echo: Echo = print,
               on_trial: Callable[[TrialRecord], None] | None = None) -> SearchOutcome:
    """Run (or resume) a search; see the module docstring."""
    return _Search(store, opts, echo, on_trial).run()
