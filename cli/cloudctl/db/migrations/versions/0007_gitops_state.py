"""GitOps state: the apply lock, the apply journal and the ownership of managed resources.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "state_locks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("info", sa.Text(), nullable=True),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "apply_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("plan_fingerprint", sa.String(128), nullable=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.UniqueConstraint("uuid"),
    )
    op.create_table(
        "apply_steps",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("apply_uuid", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("instance_uuids", sa.JSON(), nullable=False),
        sa.UniqueConstraint("apply_uuid", "seq", name="uq_apply_steps_seq"),
    )
    op.create_index("ix_apply_steps_apply_uuid", "apply_steps", ["apply_uuid"])
    op.create_table(
        "managed_resources",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("uuid", sa.String(36), nullable=True),
        sa.Column("estate", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("apply_uuid", sa.String(36), nullable=True),
        sa.UniqueConstraint("kind", "name", "estate", name="uq_managed_resources"),
    )


def downgrade() -> None:
    op.drop_table("managed_resources")
    op.drop_index("ix_apply_steps_apply_uuid", table_name="apply_steps")
    op.drop_table("apply_steps")
    op.drop_table("apply_runs")
    op.drop_table("state_locks")
