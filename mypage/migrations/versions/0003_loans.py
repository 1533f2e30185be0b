"""MyPage shows each loan's due date and whether it is overdue (SPEC §8).

Revision ID: 0003_loans
Revises: 0002_queue_position
"""
from alembic import op
import sqlalchemy as sa


revision = '0003_loans'
down_revision = '0002_queue_position'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('reservation_views') as batch:
        batch.add_column(sa.Column('due_at', sa.String(length=40), nullable=True))
        batch.add_column(sa.Column('overdue', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade():
    with op.batch_alter_table('reservation_views') as batch:
        batch.drop_column('overdue')
        batch.drop_column('due_at')
