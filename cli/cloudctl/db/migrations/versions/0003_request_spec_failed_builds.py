"""instances.request_spec (reschedule and moves) and hosts.failed_builds (BuildFailureWeigher).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("request_spec", sa.JSON(), nullable=True))
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(
            sa.Column("failed_builds", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("failed_builds")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("request_spec")
