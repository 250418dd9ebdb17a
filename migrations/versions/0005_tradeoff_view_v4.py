"""tradeoff view v4: adds `latency_ms_p10` / `latency_ms_p90`, the spread of each row's batch-1 latency

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

bench has stored the spread (p10 / p90 of the timed samples) in every latency row's `extra` since
the timing harness existed; the view now reads it out, so `table` and `report` can print each
latency with its spread, as the study protocol asks. Rows without it (none that bench writes)
read NULL.

The SQL is a frozen copy of defectopt.store.queries.TRADEOFF_VIEW_SQL as of this revision
(tests/test_report_table.py checks the newest revision's copy matches); a later change to the
view gets its own revision with its own frozen copy. Downgrade restores 0004's view, read from
that revision's file rather than copied a second time.
"""

import importlib.util
from pathlib import Path

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TRADEOFF_V4 = """CREATE VIEW tradeoff AS
WITH RECURSIVE
label(id, label) AS (
  SELECT m.id,
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
    END
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


def _v3() -> str:
    path = Path(__file__).with_name("0004_tradeoff_view_v3.py")
    spec = importlib.util.spec_from_file_location("defectopt_migration_0004", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.TRADEOFF_V3


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS tradeoff")
    op.execute(TRADEOFF_V4)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS tradeoff")
    op.execute(_v3())
