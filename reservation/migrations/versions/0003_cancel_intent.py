"""The cancels in flight: one row per reservation whose delivery has been
asked to cancel and whose own cancel is not written yet (see
reservation.domain.CancelIntent and docs/reliability.md).

Revision ID: 0003_cancel_intent
Revises: 0002_address
"""
from alembic import op
import sqlalchemy as sa


revision = '0003_cancel_intent'
down_revision = '0002_address'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('cancel_intents',
    sa.Column('reservation_id', sa.String(length=36), nullable=False),
    sa.Column('correlation_id', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('reservation_id', name=op.f('pk_cancel_intents'))
    )
    op.create_index(op.f('ix_cancel_intents_expires_at'), 'cancel_intents', ['expires_at'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_cancel_intents_expires_at'), table_name='cancel_intents')
    op.drop_table('cancel_intents')
