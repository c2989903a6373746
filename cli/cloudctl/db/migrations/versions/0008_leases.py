"""Command leases, owned task states, the state lock as a lease, and labs owning their hosts.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "command_leases",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("command", sa.String(255), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("boot_id", sa.String(64), nullable=False),
        sa.Column("pid_ns", sa.String(64), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("start_time", sa.BigInteger(), nullable=False),
        sa.Column("lease_s", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("holds", sa.JSON(), nullable=False),
        sa.Column("taken_over_by", sa.String(36), nullable=True),
        sa.UniqueConstraint("uuid"),
    )
    op.create_index("ix_command_leases_expires_at", "command_leases", ["expires_at"])
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("task_owner", sa.String(36), nullable=True))
        batch.create_index("ix_instances_task_owner", ["task_owner"])
    with op.batch_alter_table("state_locks") as batch:
        batch.add_column(sa.Column("boot_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("pid_ns", sa.String(64), nullable=True))
        batch.add_column(sa.Column("start_time", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("apply_runs") as batch:
        batch.add_column(sa.Column("lease_uuid", sa.String(36), nullable=True))
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("lab_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("lab_id")
    with op.batch_alter_table("apply_runs") as batch:
        batch.drop_column("lease_uuid")
    with op.batch_alter_table("state_locks") as batch:
        for column in ("expires_at", "heartbeat_at", "start_time", "pid_ns", "boot_id"):
            batch.drop_column(column)
    with op.batch_alter_table("instances") as batch:
        batch.drop_index("ix_instances_task_owner")
        batch.drop_column("task_owner")
    op.drop_index("ix_command_leases_expires_at", "command_leases")
    op.drop_table("command_leases")
