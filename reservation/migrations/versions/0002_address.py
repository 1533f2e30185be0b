"""Reservations remember where their book goes: the address given with the
reservation or, by default, the customer's account address at that moment.

Revision ID: 0002_address
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002_address'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('reservations') as batch:
        batch.add_column(sa.Column('address', sa.String(length=300), nullable=True))


def downgrade():
    with op.batch_alter_table('reservations') as batch:
        batch.drop_column('address')
