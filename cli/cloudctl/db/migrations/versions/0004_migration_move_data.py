"""migrations: old_vm_state, shared_storage, block_migration, error (moves and their undo).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("migrations") as batch:
        batch.add_column(sa.Column("old_vm_state", sa.String(32), nullable=True))
        batch.add_column(sa.Column("shared_storage", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("block_migration", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("migrations") as batch:
        batch.drop_column("error")
        batch.drop_column("block_migration")
        batch.drop_column("shared_storage")
        batch.drop_column("old_vm_state")
