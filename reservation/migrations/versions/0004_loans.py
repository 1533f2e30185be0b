"""Loans (SPEC §8): a delivered reservation's due date, renewals and overdue
flag, and who canceled a canceled one.

Revision ID: 0004_loans
Revises: 0003_cancel_intent
"""
from alembic import op
import sqlalchemy as sa


revision = '0004_loans'
down_revision = '0003_cancel_intent'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('reservations') as batch:
        batch.add_column(sa.Column('due_at', sa.String(length=40), nullable=True))
        batch.add_column(sa.Column('renewals', sa.Integer(), server_default='0', nullable=False))
        batch.add_column(sa.Column('overdue', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.add_column(sa.Column('canceled_by', sa.String(length=16), nullable=True))
    op.create_index('ix_reservations_status_due_at', 'reservations', ['status', 'due_at'], unique=False)
    op.create_index('ix_reservations_customer_status', 'reservations', ['customer', 'status'], unique=False)


def downgrade():
    op.drop_index('ix_reservations_customer_status', table_name='reservations')
    op.drop_index('ix_reservations_status_due_at', table_name='reservations')
    with op.batch_alter_table('reservations') as batch:
        batch.drop_column('canceled_by')
        batch.drop_column('overdue')
        batch.drop_column('renewals')
        batch.drop_column('due_at')
