"""The one schema module: every table of the results store.

Alembic migrations under `migrations/versions` create exactly these tables; a test compares
the migrated DB with this metadata so the two cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class ModelStatus:
    RUNNING = "running"  # artifact being produced; never loaded
    READY = "ready"  # artifact complete, hashed, verified on load
    FAILED = "failed"  # the run ended with an error; kept for the record


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String, unique=True)
    kind: Mapped[str] = mapped_column(String)  # neu | mvtec | dagm | folder | synthetic
    root: Mapped[str] = mapped_column(Text)
    spec: Mapped[str] = mapped_column(Text)
    class_names: Mapped[list[Any]] = mapped_column(JSON)
    task: Mapped[str] = mapped_column(String)  # binary | multiclass
    split_seed: Mapped[int] = mapped_column(Integer)
    split_hash: Mapped[str] = mapped_column(String)  # sha256 of the manifest below
    # [{"path": relative path, "label": int, "defect_type": str, "split": train|val|test}]
    manifest: Mapped[list[Any]] = mapped_column(JSON)
    skipped_bad_images: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Technique(Base):
    __tablename__ = "techniques"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # finetune | distill | prune | quantize-dynamic | quantize-static | quantize-bf16 | ...
    name: Mapped[str] = mapped_column(String)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Model(Base):
    __tablename__ = "models"
    # Never reuse an id: artifacts/<id>/ of a deleted row must not be mistaken for a new one.
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alias: Mapped[str] = mapped_column(String)
    timm_name: Mapped[str] = mapped_column(String)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"), nullable=True)
    technique_id: Mapped[int | None] = mapped_column(ForeignKey("techniques.id"), nullable=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"), nullable=True)
    img_size: Mapped[int] = mapped_column(Integer)
    num_classes: Mapped[int] = mapped_column(Integer)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    artifact_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    artifact_format: Mapped[str | None] = mapped_column(String, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String, nullable=True)
    size_bytes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    param_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String, default=ModelStatus.RUNNING)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)  # owner while running
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    parent: Mapped["Model | None"] = relationship(remote_side=[id])
    technique: Mapped[Technique | None] = relationship()
    dataset: Mapped[Dataset | None] = relationship()


class Measurement(Base):
    __tablename__ = "measurements"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    run_id: Mapped[str] = mapped_column(String, index=True)  # one bench invocation per model
    device: Mapped[str] = mapped_column(String)  # cpu | cuda
    backend: Mapped[str] = mapped_column(String)  # torch | onnxruntime | openvino | tensorrt
    precision: Mapped[str | None] = mapped_column(String, nullable=True)  # fp32|bf16|fp16|int8
    batch_size: Mapped[int] = mapped_column(Integer)
    threads: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String, index=True)  # a name from defectopt.metrics
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    host: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class TrainEpoch(Base):
    """Per-epoch curve of a training run (finetune, distill, QAT, prune recovery)."""

    __tablename__ = "train_epochs"
    __table_args__ = (UniqueConstraint("model_id", "epoch"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float] = mapped_column(Float)
    val_recall: Mapped[float | None] = mapped_column(Float, nullable=True)
    val_precision: Mapped[float | None] = mapped_column(Float, nullable=True)
    val_f1: Mapped[float | None] = mapped_column(Float, nullable=True)
    lr: Mapped[float | None] = mapped_column(Float, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Sensitivity(Base):
    """Per-layer quantization sensitivity of a model (quantize --sensitivity)."""

    __tablename__ = "sensitivity"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    method: Mapped[str] = mapped_column(String)
    backend: Mapped[str] = mapped_column(String)
    layer: Mapped[str] = mapped_column(Text)
    rank: Mapped[int] = mapped_column(Integer)
    recall_drop: Mapped[float] = mapped_column(Float)
    logit_error: Mapped[float] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class HostPeak(Base):
    """Peak matrix-multiply rate of a host, per dtype (the roofline's ceiling)."""

    __tablename__ = "host_peaks"
    __table_args__ = (UniqueConstraint("host_hash", "device", "dtype", "threads"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host_hash: Mapped[str] = mapped_column(String, index=True)
    device: Mapped[str] = mapped_column(String)
    dtype: Mapped[str] = mapped_column(String)  # fp32 | bf16 | int8 | fp16
    threads: Mapped[int] = mapped_column(Integer)
    macs_per_s: Mapped[float] = mapped_column(Float)
    host: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
