"""Screen images with a bundle: preprocess (the shared function), run the bundle's runtime,
decide at the bundle's threshold."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defectopt.errors import DefectoptError
from defectopt.runtime.bundle import Bundle
from defectopt.runtime.preprocess import (
    UnreadableImage,
    binary_decisions,
    defect_scores,
    load_rgb,
    preprocess,
    softmax,
)


@dataclass
class ImageResult:
    path: str
    score: float  # binary: P(defect); multi-class: P(predicted type)
    flagged: bool  # binary: score >= threshold; multi-class: every class is a defect type
    predicted: str  # the class name decided on
    ms: float  # this image's share of its batch's wall time (preprocess + inference)

    def as_row(self) -> dict:
        return {"path": self.path, "score": round(self.score, 6), "flagged": self.flagged, "predicted": self.predicted,
                "ms": round(self.ms, 3)}


def open_session(bundle: Bundle, *, threads: int | None = None):
    """The bundle's model in the session bench measured it with (runtime.sessions)."""
    from defectopt.runtime import sessions

    if bundle.format == "openvino":
        return sessions.OpenVINOSession(bundle.model_file, threads=threads,
                                        inference_precision=bundle.data.get("inference_precision", "fp32"))
    if bundle.format == "tflite":
        return sessions.LiteRTSession(bundle.model_file, threads=threads)
    return sessions.OnnxSession(bundle.model_file, threads=threads)


def decide(bundle: Bundle, logits: np.ndarray) -> list[tuple[float, bool, str]]:
    """(score, flagged, class name) per row of logits, by the bundle's rule."""
    classes = bundle.classes
    if bundle.task == "binary":
        scores = defect_scores(logits)
        flags = binary_decisions(logits, bundle.threshold)
        return [(float(s), bool(f), classes[int(f)]) for s, f in zip(scores, flags)]
    probs = softmax(np.asarray(logits, dtype=np.float64))
    top = probs.argmax(axis=1)
    return [(float(probs[i, c]), True, classes[int(c)]) for i, c in enumerate(top)]


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def collect_images(specs: Iterable[str]) -> list[Path]:
    """Files, folders (recursive, image suffixes only) and glob patterns -> image paths, sorted
    within each folder or pattern, each path once."""
    import glob

    out: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            found = [p]
        elif any(ch in str(spec) for ch in "*?["):
            found = sorted(Path(q) for q in glob.glob(str(spec), recursive=True) if Path(q).is_file())
        else:
            raise DefectoptError(f"{spec}: no such file, folder or matching glob")
        if not found:
            raise DefectoptError(f"{spec}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
        out.extend(found)
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class PredictOptions:
    bundle: str = ""  # the bundle folder (`defectopt export`)
    paths: tuple[str, ...] = ()  # files, folders (recursive) or globs
    batch_size: int = 8
    threads: int | None = None  # None: the runtime's default (all cores)
    skip_bad_images: bool = False  # list and skip unreadable images instead of failing


@dataclass
class PredictOutcome:
    results: list[ImageResult]
    unreadable: list[tuple[str, str]]  # (path, why)
    seconds: float

    @property
    def flagged(self) -> int:
        return sum(r.flagged for r in self.results)

    @property
    def images_per_second(self) -> float:
        return len(self.results) / self.seconds if self.seconds > 0 else 0.0


def predict(opts: PredictOptions, *, on_start=lambda n: None, on_result=lambda r: None) -> PredictOutcome:
    """The entry point behind `defectopt predict`: every image of `opts.paths` through the bundle."""
    from defectopt.runtime.bundle import load_bundle

    images = collect_images(opts.paths) if opts.paths else []
    if not images:
        raise DefectoptError("predict needs at least one image, folder or glob")
    predictor = Predictor(load_bundle(opts.bundle), threads=opts.threads, batch_size=opts.batch_size)
    on_start(len(images))
    t0 = time.perf_counter()
    results: list[ImageResult] = []
    unreadable: list[tuple[str, str]] = []
    for item in predictor.predict_paths(images, skip_bad=opts.skip_bad_images):
        if isinstance(item, ImageResult):
            results.append(item)
            on_result(item)
        else:
            unreadable.append(item)
    return PredictOutcome(results, unreadable, time.perf_counter() - t0)


class Predictor:
    def __init__(self, bundle: Bundle, *, threads: int | None = None, batch_size: int = 8):
        if batch_size < 1:
            raise DefectoptError(f"--batch-size must be >= 1, got {batch_size}")
        self.bundle, self.batch_size = bundle, batch_size
        self.session = open_session(bundle, threads=threads)

    def predict_arrays(self, batch: np.ndarray) -> list[tuple[float, bool, str]]:
        return decide(self.bundle, self.session.predict(batch))

    def predict_paths(self, paths: Iterable[str | Path], *, skip_bad: bool = False) -> Iterator[ImageResult | tuple[str, str]]:
        """Results in input order. An unreadable image raises a one-line error, or with `skip_bad`
        is yielded as (path, why) and left out of its batch."""
        chunk: list[tuple[str, np.ndarray]] = []
        t0 = time.perf_counter()
        for p in paths:
            try:
                chunk.append((str(p), preprocess(load_rgb(p), self.bundle.preprocess)))
            except UnreadableImage as exc:
                if not skip_bad:
                    raise
                yield exc.path, exc.reason
            if len(chunk) == self.batch_size:
                yield from self._run(chunk, t0)
                chunk, t0 = [], time.perf_counter()
        if chunk:
            yield from self._run(chunk, t0)

    def _run(self, chunk: list[tuple[str, np.ndarray]], t0: float) -> list[ImageResult]:
        decided = self.predict_arrays(np.stack([x for _, x in chunk]))
        ms = (time.perf_counter() - t0) * 1e3 / len(chunk)
        return [ImageResult(p, s, f, c, ms) for (p, _), (s, f, c) in zip(chunk, decided)]
