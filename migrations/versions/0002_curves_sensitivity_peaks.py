"""training curves, quantization sensitivity, host peak rates (roofline)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "train_epochs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("train_loss", sa.Float, nullable=False),
        sa.Column("val_recall", sa.Float, nullable=True),
        sa.Column("val_precision", sa.Float, nullable=True),
        sa.Column("val_f1", sa.Float, nullable=True),
        sa.Column("lr", sa.Float, nullable=True),
        sa.Column("seconds", sa.Float, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("model_id", "epoch"),
    )
    op.create_index("ix_train_epochs_model_id", "train_epochs", ["model_id"])
    op.create_table(
        "sensitivity",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("method", sa.String, nullable=False),
        sa.Column("backend", sa.String, nullable=False),
        sa.Column("layer", sa.Text, nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("recall_drop", sa.Float, nullable=False),
        sa.Column("logit_error", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_sensitivity_model_id", "sensitivity", ["model_id"])
    op.create_table(
        "host_peaks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("host_hash", sa.String, nullable=False),
        sa.Column("device", sa.String, nullable=False),
        sa.Column("dtype", sa.String, nullable=False),
        sa.Column("threads", sa.Integer, nullable=False),
        sa.Column("macs_per_s", sa.Float, nullable=False),
        sa.Column("host", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("host_hash", "device", "dtype", "threads"),
    )
    op.create_index("ix_host_peaks_host_hash", "host_peaks", ["host_hash"])


def downgrade() -> None:
    for name in ("host_peaks", "sensitivity", "train_epochs"):
        op.drop_table(name)
