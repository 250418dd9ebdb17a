"""core tables: datasets, techniques, models (with lineage), measurements; tradeoff view v1

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copy of the first `tradeoff` view; later revisions replace it.
TRADEOFF_V1 = """
CREATE VIEW tradeoff AS
SELECT m.id AS model_id, m.alias, m.parent_id, t.name AS technique, d.name AS dataset,
       ms.device, ms.backend, ms.batch_size, ms.threads,
       MAX(CASE WHEN ms.metric = 'recall' THEN ms.value END) AS recall,
       MAX(CASE WHEN ms.metric = 'precision' THEN ms.value END) AS precision,
       MAX(CASE WHEN ms.metric = 'f1' THEN ms.value END) AS f1,
       MAX(CASE WHEN ms.metric = 'latency_ms' THEN ms.value END) AS latency_ms,
       MAX(CASE WHEN ms.metric = 'size_mb' THEN ms.value END) AS size_mb
FROM models m
JOIN measurements ms ON ms.model_id = m.id
LEFT JOIN techniques t ON t.id = m.technique_id
LEFT JOIN datasets d ON d.id = m.dataset_id
WHERE m.status = 'ready'
GROUP BY m.id, ms.device, ms.backend, ms.batch_size, ms.threads
"""


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String, nullable=False, unique=True),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("root", sa.Text, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("class_names", sa.JSON, nullable=False),
        sa.Column("task", sa.String, nullable=False),
        sa.Column("split_seed", sa.Integer, nullable=False),
        sa.Column("split_hash", sa.String, nullable=False),
        sa.Column("manifest", sa.JSON, nullable=False),
        sa.Column("skipped_bad_images", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "techniques",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("alias", sa.String, nullable=False),
        sa.Column("timm_name", sa.String, nullable=False),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("models.id"), nullable=True),
        sa.Column("technique_id", sa.Integer, sa.ForeignKey("techniques.id"), nullable=True),
        sa.Column("dataset_id", sa.Integer, sa.ForeignKey("datasets.id"), nullable=True),
        sa.Column("img_size", sa.Integer, nullable=False),
        sa.Column("num_classes", sa.Integer, nullable=False),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("artifact_path", sa.Text, nullable=True),
        sa.Column("artifact_format", sa.String, nullable=True),
        sa.Column("sha256", sa.String, nullable=True),
        sa.Column("size_bytes", sa.Integer, nullable=True),
        sa.Column("param_count", sa.Integer, nullable=True),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.Column("config", sa.JSON, nullable=False),
        # Never reuse an id: artifacts/<id>/ of a deleted row must not be mistaken for a new one.
        sqlite_autoincrement=True,
    )
    op.create_table(
        "measurements",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("run_id", sa.String, nullable=False),
        sa.Column("device", sa.String, nullable=False),
        sa.Column("backend", sa.String, nullable=False),
        sa.Column("precision", sa.String, nullable=True),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("threads", sa.Integer, nullable=False),
        sa.Column("metric", sa.String, nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("extra", sa.JSON, nullable=False),
        sa.Column("host", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_measurements_model_id", "measurements", ["model_id"])
    op.create_index("ix_measurements_run_id", "measurements", ["run_id"])
    op.create_index("ix_measurements_metric", "measurements", ["metric"])
    op.execute(TRADEOFF_V1)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS tradeoff")
    for name in ("measurements", "models", "techniques", "datasets"):
        op.drop_table(name)
