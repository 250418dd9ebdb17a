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


class Session:
    """The bundle's model in its runtime: float32 NCHW batch in, logits out."""

    def __init__(self, bundle: Bundle, *, threads: int | None = None):
        self.bundle = bundle
        if bundle.format == "openvino":
            try:
                import openvino as ov
            except ImportError:
                raise DefectoptError("this bundle needs OpenVINO: pip install openvino") from None
            config = {"PERFORMANCE_HINT": "LATENCY",
                      # the precision the bundle was measured with (INT8 models: their float parts)
                      "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}.get(
                          bundle.data.get("inference_precision", "fp32"), "f32")}
            if threads:
                config["INFERENCE_NUM_THREADS"] = threads
            self._core = ov.Core()
            self._model = self._core.read_model(str(bundle.model_file))
            self._config = config
            self._compiled: dict[tuple, tuple] = {}
            self._kind = "openvino"
        elif bundle.format == "tflite":
            try:
                from ai_edge_litert.interpreter import Interpreter
            except ImportError:
                raise DefectoptError("this bundle needs the LiteRT interpreter: pip install ai-edge-litert") from None
            self._interpreter = Interpreter(model_path=str(bundle.model_file), num_threads=threads)
            self._input = self._interpreter.get_input_details()[0]["index"]
            self._output = self._interpreter.get_output_details()[0]["index"]
            self._shape: tuple | None = None
            self._kind = "litert"
        else:
            try:
                import onnxruntime as ort
            except ImportError:
                raise DefectoptError("this bundle needs ONNX Runtime: pip install onnxruntime") from None
            opts = ort.SessionOptions()
            if threads:
                opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
            self._session = ort.InferenceSession(str(bundle.model_file), sess_options=opts, providers=["CPUExecutionProvider"])
            self._input = self._session.get_inputs()[0].name
            self._kind = "onnxruntime"

    def logits(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._kind == "onnxruntime":
            return self._session.run(None, {self._input: batch})[0]
        if self._kind == "litert":
            if batch.shape != self._shape:
                self._interpreter.resize_tensor_input(self._input, list(batch.shape))
                self._interpreter.allocate_tensors()
                self._shape = tuple(batch.shape)
            self._interpreter.set_tensor(self._input, batch)
            self._interpreter.invoke()
            return np.array(self._interpreter.get_tensor(self._output))
        shape = tuple(batch.shape)
        if shape not in self._compiled:
            if len(self._compiled) >= 4:
                self._compiled.pop(next(iter(self._compiled)))
            model = self._model.clone()
            model.reshape(list(shape))
            compiled = self._core.compile_model(model, "CPU", self._config)
            self._compiled[shape] = (compiled, compiled.create_infer_request())
        compiled, request = self._compiled[shape]
        return np.asarray(request.infer({0: batch})[compiled.output(0)])


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
        self.session = Session(bundle, threads=threads)

    def predict_arrays(self, batch: np.ndarray) -> list[tuple[float, bool, str]]:
        return decide(self.bundle, self.session.logits(batch))

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
