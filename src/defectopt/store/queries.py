"""The `tradeoff` view (its SQL and column meanings, defined once) and the queries over it.

The view turns the long `measurements` table (one row per metric) into one row per
(model, device, backend, precision, threads): the answer table of the study. Migration 0005
creates it from a frozen copy of `TRADEOFF_VIEW_SQL` (a test keeps the newest migration's copy
equal to it); the README's column list is `TRADEOFF_COLUMNS`.

Conventions it relies on (bench writes them; see src/defectopt/metrics.py for the names):
- the latest value of each (model, device, backend, precision, threads, batch size, metric) wins,
  so `bench --force` or a later run with more batch sizes updates the row in place;
- task metrics and static rows (size_mb, param_count, gmacs) have batch_size 0 and do not depend
  on threads: they join every thread count of the same (model, device, backend, precision);
- timed rows have the batch size they were timed at: latency and cost are read at batch 1
  (`latency_ms`, falling back to `latency_p50_ms`), throughput is the best over the measured
  batch sizes (`batch` says which), peak memory and roofline fraction the largest recorded.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import text

from defectopt.store.db import Store

# Lineage labels (the SQL twin of models.catalog.technique_label): `vit_b16`,
# `mobilevit_s[KD α0.5]` / `[no-KD]`, `prune0.3`, the quantize label or method.
_LABEL_SQL = """
    CASE
      WHEN t.name = 'distill' THEN
        m.alias || CASE WHEN COALESCE(json_extract(t.params, '$.alpha'), 0) != 0
                        THEN '[KD α' || printf('%g', json_extract(t.params, '$.alpha')) || ']'
                        ELSE '[no-KD]' END
      WHEN t.name = 'prune' THEN
        'prune' || COALESCE(printf('%g', json_extract(t.params, '$.ratio')), '?')
        || CASE WHEN json_extract(t.params, '$.method') = 'unstructured' THEN '-unstructured' ELSE '' END
      WHEN t.name LIKE 'quantize%' THEN
        COALESCE(json_extract(t.params, '$.label'), substr(t.name, 10))
      ELSE m.alias
    END"""

TRADEOFF_VIEW_SQL = (
    """CREATE VIEW tradeoff AS
WITH RECURSIVE
label(id, label) AS (
  SELECT m.id,"""
    + _LABEL_SQL
    + """
  FROM models m LEFT JOIN techniques t ON t.id = m.technique_id
),
-- walk each model up to its root, prefixing the ancestors' labels
chain(id, node, parent, depth, lineage) AS (
  SELECT m.id, m.id, m.parent_id, 0, l.label FROM models m JOIN label l ON l.id = m.id
  UNION ALL
  SELECT c.id, p.id, p.parent_id, c.depth + 1, l.label || ' → ' || c.lineage
  FROM chain c JOIN models p ON p.id = c.parent JOIN label l ON l.id = p.id
  WHERE c.depth < 64
),
lineage(id, root_id, lineage) AS (
  SELECT id, node, lineage FROM chain WHERE parent IS NULL OR depth = 64
),
-- timed rows (batch >= 1): the newest of each (model, device, backend, precision, threads, batch, metric)
latest AS (
  SELECT ms.* FROM measurements ms
  JOIN (SELECT MAX(id) AS id FROM measurements WHERE batch_size >= 1
        GROUP BY model_id, device, backend, COALESCE(precision, ''), threads, batch_size, metric) newest
    ON newest.id = ms.id
),
timed AS (
  SELECT model_id, device, backend, precision AS dtype, threads,
    COALESCE(MAX(CASE WHEN metric = 'latency_ms' AND batch_size = 1 THEN value END),
             MAX(CASE WHEN metric = 'latency_p50_ms' AND batch_size = 1 THEN value END)) AS latency_ms,
    -- the spread of that figure: p10 / p90 of the timed samples, from the latency row's extra
    MAX(CASE WHEN metric = 'latency_ms' AND batch_size = 1 THEN json_extract(extra, '$.p10_ms') END) AS latency_ms_p10,
    MAX(CASE WHEN metric = 'latency_ms' AND batch_size = 1 THEN json_extract(extra, '$.p90_ms') END) AS latency_ms_p90,
    MAX(CASE WHEN metric = 'throughput_ips' THEN value END) AS throughput_ips,
    MAX(CASE WHEN metric = 'peak_rss_mb' THEN value END) AS peak_rss_mb,
    MAX(CASE WHEN metric = 'cuda_peak_mb' THEN value END) AS cuda_peak_mb,
    MAX(CASE WHEN metric = 'cost_per_1m' AND batch_size = 1 THEN value END) AS cost_per_1m,
    MAX(CASE WHEN metric = 'roofline_fraction' THEN value END) AS roofline_fraction,
    MAX(CASE WHEN metric = 'speedup_vs_parent' AND batch_size = 1 THEN value END) AS speedup_vs_parent,
    MAX(CASE WHEN metric = 'contention_cores' THEN value END) AS contention_cores,
    MAX(created_at) AS measured_at
  FROM latest
  GROUP BY model_id, device, backend, COALESCE(precision, ''), threads
),
-- task metrics and static rows (batch 0) do not depend on threads: the newest of each
-- (model, device, backend, precision, metric)
untimed_latest AS (
  SELECT ms.* FROM measurements ms
  JOIN (SELECT MAX(id) AS id FROM measurements WHERE batch_size = 0
        GROUP BY model_id, device, backend, COALESCE(precision, ''), metric) newest
    ON newest.id = ms.id
),
untimed AS (
  SELECT model_id, device, backend, precision AS dtype, MAX(threads) AS threads,
    MAX(CASE WHEN metric = 'recall' THEN value END) AS recall,
    MAX(CASE WHEN metric = 'recall' THEN id END) AS recall_row_id,
    MAX(CASE WHEN metric = 'recall_ci_low' THEN value END) AS recall_ci_low,
    MAX(CASE WHEN metric = 'recall_ci_high' THEN value END) AS recall_ci_high,
    MAX(CASE WHEN metric = 'precision' THEN value END) AS precision,
    MAX(CASE WHEN metric = 'f1' THEN value END) AS f1,
    MAX(CASE WHEN metric = 'fnr' THEN value END) AS fnr,
    MAX(CASE WHEN metric = 'accuracy' THEN value END) AS accuracy,
    MAX(CASE WHEN metric = 'auroc' THEN value END) AS auroc,
    MAX(CASE WHEN metric = 'size_mb' THEN value END) AS size_mb,
    MAX(CASE WHEN metric = 'param_count' THEN value END) AS param_count,
    MAX(CASE WHEN metric = 'gmacs' THEN value END) AS gmacs,
    MAX(created_at) AS measured_at
  FROM untimed_latest
  GROUP BY model_id, device, backend, COALESCE(precision, '')
),
-- one row per timed key with its task metrics, plus task-only keys never timed (full outer join)
grouped AS (
  SELECT tm.model_id, tm.device, tm.backend, tm.dtype, tm.threads,
    u.recall, u.recall_row_id, u.recall_ci_low, u.recall_ci_high, u.precision, u.f1, u.fnr, u.accuracy, u.auroc,
    tm.latency_ms, tm.latency_ms_p10, tm.latency_ms_p90, tm.throughput_ips, u.size_mb, u.param_count, u.gmacs, tm.peak_rss_mb, tm.cuda_peak_mb,
    tm.cost_per_1m, tm.roofline_fraction, tm.speedup_vs_parent, tm.contention_cores,
    MAX(tm.measured_at, COALESCE(u.measured_at, tm.measured_at)) AS measured_at
  FROM timed tm LEFT JOIN untimed u ON u.model_id = tm.model_id AND u.device = tm.device
    AND u.backend = tm.backend AND COALESCE(u.dtype, '') = COALESCE(tm.dtype, '')
  UNION ALL
  SELECT u.model_id, u.device, u.backend, u.dtype, u.threads,
    u.recall, u.recall_row_id, u.recall_ci_low, u.recall_ci_high, u.precision, u.f1, u.fnr, u.accuracy, u.auroc,
    NULL, NULL, NULL, NULL, u.size_mb, u.param_count, u.gmacs, NULL, NULL, NULL, NULL, NULL, NULL, u.measured_at
  FROM untimed u
  WHERE NOT EXISTS (SELECT 1 FROM timed tm WHERE tm.model_id = u.model_id AND tm.device = u.device
    AND tm.backend = u.backend AND COALESCE(tm.dtype, '') = COALESCE(u.dtype, ''))
),
-- the batch size that gave the best throughput of each row
best_batch AS (
  SELECT model_id, device, backend, dtype, threads, batch_size FROM (
    SELECT model_id, device, backend, precision AS dtype, threads, batch_size,
      ROW_NUMBER() OVER (PARTITION BY model_id, device, backend, COALESCE(precision, ''), threads
                         ORDER BY value DESC) AS rk
    FROM latest WHERE metric = 'throughput_ips')
  WHERE rk = 1
),
-- reference recall of a model as seen from a device: its row on that device if any, torch
-- eager preferred (the unconverted model), newest first
devices AS (SELECT DISTINCT device FROM grouped),
ref_recall AS (
  SELECT model_id, device, recall, recall_row_id FROM (
    SELECT r.model_id, dv.device, r.recall, r.recall_row_id,
      ROW_NUMBER() OVER (PARTITION BY r.model_id, dv.device
                         ORDER BY (r.device = dv.device) DESC, (r.backend = 'torch') DESC,
                                  r.measured_at DESC, r.recall_row_id DESC) AS rk
    FROM grouped r CROSS JOIN devices dv WHERE r.recall IS NOT NULL)
  WHERE rk = 1
),
-- torch-eager latency of each model per (device, threads), fp32 preferred: the speedup base
eager_latency AS (
  SELECT model_id, device, threads, latency_ms FROM (
    SELECT model_id, device, threads, latency_ms,
      ROW_NUMBER() OVER (PARTITION BY model_id, device, threads
                         ORDER BY (dtype = 'fp32') DESC, measured_at DESC) AS rk
    FROM grouped WHERE backend = 'torch' AND latency_ms IS NOT NULL)
  WHERE rk = 1
)
SELECT
  g.model_id AS id, m.alias, lin.lineage, t.name AS technique, d.name AS dataset,
  m.parent_id, lin.root_id AS teacher_id, m.artifact_format AS format, m.img_size,
  g.device, g.backend, g.dtype, g.threads, bb.batch_size AS batch,
  g.recall, g.recall_ci_low, g.recall_ci_high, g.precision, g.f1, g.fnr, g.accuracy, g.auroc,
  g.latency_ms, g.latency_ms_p10, g.latency_ms_p90, g.throughput_ips, g.size_mb, g.param_count, g.gmacs,
  CASE WHEN g.device LIKE 'cuda%' THEN COALESCE(g.cuda_peak_mb, g.peak_rss_mb) ELSE g.peak_rss_mb END AS peak_mb,
  g.peak_rss_mb, g.cuda_peak_mb, g.cost_per_1m, g.roofline_fraction,
  tl.latency_ms / g.latency_ms AS speedup_vs_teacher, g.speedup_vs_parent,
  g.recall - tr.recall AS drecall_vs_teacher,
  g.recall - pr.recall AS drecall_vs_parent,
  g.recall_row_id, pr.recall_row_id AS parent_recall_row_id,
  g.contention_cores,
  g.measured_at
FROM grouped g
JOIN models m ON m.id = g.model_id
JOIN lineage lin ON lin.id = m.id
LEFT JOIN techniques t ON t.id = m.technique_id
LEFT JOIN datasets d ON d.id = m.dataset_id
LEFT JOIN best_batch bb ON bb.model_id = g.model_id AND bb.device = g.device AND bb.backend = g.backend
  AND COALESCE(bb.dtype, '') = COALESCE(g.dtype, '') AND bb.threads = g.threads
LEFT JOIN eager_latency tl ON tl.model_id = lin.root_id AND tl.device = g.device AND tl.threads = g.threads
LEFT JOIN ref_recall tr ON tr.model_id = lin.root_id AND tr.device = g.device
LEFT JOIN ref_recall pr ON pr.model_id = m.parent_id AND pr.device = g.device
WHERE m.status = 'ready'
"""
)

# Every column of the view and what it means (the README's table is generated from this).
TRADEOFF_COLUMNS: dict[str, str] = {
    "id": "model ID (artifacts/<id>/)",
    "alias": "registry alias of the architecture",
    "lineage": "chain from the root teacher, e.g. `vit_b16 → mobilevit_s[KD α0.5] → prune0.3 → int8-static`",
    "technique": "technique that produced the model (finetune, distill, prune, quantize-*)",
    "dataset": "dataset name (its frozen test split is what the task metrics are measured on)",
    "parent_id": "model it was derived from (NULL for a teacher)",
    "teacher_id": "root of the lineage",
    "format": "artifact format (torch, torch-pruned, onnx, openvino, ...)",
    "img_size": "input image size",
    "device": "cpu or cuda",
    "backend": "runtime that ran it: torch, onnxruntime, openvino or tensorrt",
    "dtype": "numeric precision of the run (fp32, bf16, fp16 or int8): the measurements' `precision` column",
    "threads": "CPU threads the run used",
    "batch": "batch size at which `throughput_ips` was reached",
    "recall": "defect recall on the test split at the stored threshold (macro recall for multi-class)",
    "recall_ci_low": "lower end of the 95% CI of recall (binary: exact Clopper-Pearson; multi-class: seeded bootstrap)",
    "recall_ci_high": "upper end of that CI",
    "precision": "defect precision (task metric, not the numeric precision: see `dtype`)",
    "f1": "F1 of precision and recall",
    "fnr": "false-negative rate = 1 - recall",
    "accuracy": "test accuracy",
    "auroc": "AUROC of the defect score (binary tasks)",
    "latency_ms": "median ms per image at batch 1",
    "latency_ms_p10": "p10 of the timed ms per image at batch 1 (the low end of latency_ms's spread)",
    "latency_ms_p90": "p90 of the timed ms per image at batch 1 (the high end)",
    "throughput_ips": "best images/s over the measured batch sizes",
    "size_mb": "deployable artifact size on disk, MB",
    "param_count": "parameters",
    "gmacs": "GMACs per image",
    "peak_mb": "peak memory of the device: CUDA max allocated on cuda, RSS high-water mark on cpu",
    "peak_rss_mb": "RSS high-water mark above baseline, MB (fresh process)",
    "cuda_peak_mb": "torch.cuda.max_memory_allocated, MB",
    "cost_per_1m": "cost of one million images at batch 1 at the bench's price per core-hour (GPU-hour on cuda)",
    "roofline_fraction": "achieved MAC/s over the host's measured peak for the precision",
    "speedup_vs_teacher": "latency of the root teacher in torch eager (same device, same threads) / this row's latency",
    "speedup_vs_parent": "parent latency / this latency, same runtime, timed interleaved in one process (bench --vs-parent)",
    "drecall_vs_teacher": "recall - the teacher's recall (its row on the same device, torch eager preferred)",
    "drecall_vs_parent": "recall - the parent's recall (same rule); `table` adds McNemar's p-value",
    "recall_row_id": "measurements.id of the recall row (its `extra` holds the per-image decisions)",
    "parent_recall_row_id": "measurements.id of the parent's recall row the delta was taken against",
    "contention_cores": "most cores other processes (or VM steal) kept busy during any of the row's timed phases; "
                        "`table` flags the row as contended above metrics.CONTENTION_MAX_CORES",
    "measured_at": "time of the newest measurement in the row",
}


def tradeoff_frame(store: Store, *, device: str | None = None, dataset: str | None = None,
                   ids: list[int] | None = None) -> pd.DataFrame:
    """The `tradeoff` view as a DataFrame (optionally one device / dataset / set of models), ordered by id."""
    sql = "SELECT * FROM tradeoff"
    clauses, params = [], {}
    if device:
        clauses.append("device = :device")
        params["device"] = device
    if dataset:
        clauses.append("dataset = :dataset")
        params["dataset"] = dataset
    if ids is not None:
        clauses.append(f"id IN ({', '.join(str(int(i)) for i in ids) or 'NULL'})")
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY id, device, backend, dtype, threads"
    with store.engine.connect() as conn:
        result = conn.execute(text(sql), params)
        frame = pd.DataFrame([tuple(r) for r in result.fetchall()], columns=list(result.keys()))  # plain tuples: a "dtype" column would confuse pandas
    for col in frame.columns:
        if col not in {"alias", "lineage", "technique", "dataset", "format", "device", "backend", "dtype", "measured_at"}:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def recall_extras(store: Store, row_ids: list[int]) -> dict[int, dict[str, Any]]:
    """`extra` JSON of the given recall measurement rows (per-image decisions live there)."""
    from sqlalchemy import select

    from defectopt.store.schema import Measurement

    ids = sorted({int(i) for i in row_ids if i is not None and i == i})
    if not ids:
        return {}
    with store.session() as s:
        rows = s.execute(select(Measurement.id, Measurement.extra).where(Measurement.id.in_(ids))).all()
    return {rid: (extra or {}) for rid, extra in rows}


def host_fingerprints(store: Store, model_ids: list[int] | None = None) -> list[dict[str, Any]]:
    """Distinct host fingerprints of the measurements (newest first), for the report."""
    from sqlalchemy import select

    from defectopt.store.schema import Measurement

    seen, out = set(), []
    with store.session() as s:
        q = select(Measurement.host, Measurement.device).order_by(Measurement.id.desc())
        if model_ids:
            q = q.where(Measurement.model_id.in_([int(i) for i in model_ids]))
        for host, device in s.execute(q.limit(5000)):
            key = repr(sorted((host or {}).items())) + device
            if host and key not in seen:
                seen.add(key)
                out.append({"device": device, **host})
    return out


def missed_by_type(store: Store, model_ids: list[int] | None = None) -> pd.DataFrame:
    """Test images missed per defect type, from the newest `recall_type:<type>` rows.

    Columns: id, device, backend, dtype, type, n (test images of the type), missed (of them not
    caught: binary, passed as good; multi-class, given another class). Counts, not rates,
    because a QA engineer asks "which defects would have shipped" and 1/20 and 5/100 differ.
    """
    from defectopt.metrics import RECALL_TYPE_PREFIX as prefix

    sql = ("SELECT ms.model_id, ms.device, ms.backend, ms.precision, ms.metric, ms.value, "
           "json_extract(ms.extra, '$.n') FROM measurements ms JOIN (SELECT MAX(id) AS id FROM measurements "
           "WHERE batch_size = 0 AND metric LIKE :pat GROUP BY model_id, device, backend, COALESCE(precision, ''), metric) "
           "newest ON newest.id = ms.id")
    params: dict[str, Any] = {"pat": prefix + "%"}
    if model_ids is not None:
        sql += f" WHERE ms.model_id IN ({', '.join(str(int(i)) for i in model_ids) or 'NULL'})"
    with store.engine.connect() as conn:
        rows = conn.execute(text(sql + " ORDER BY ms.model_id, ms.device, ms.backend, ms.metric"), params).fetchall()
    out = []
    for model_id, device, backend, dtype, metric, value, n in rows:
        if value is None or n is None:
            continue
        n = int(n)
        out.append({"id": model_id, "device": device, "backend": backend, "dtype": dtype,
                    "type": metric[len(prefix):], "n": n, "missed": n - round(float(value) * n)})
    return pd.DataFrame(out, columns=["id", "device", "backend", "dtype", "type", "n", "missed"])
