"""Deliveries know where they go: the address the reservation carried.

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
    with op.batch_alter_table('deliveries') as batch:
        batch.add_column(sa.Column('address', sa.String(length=300), nullable=True))


def downgrade():
    with op.batch_alter_table('deliveries') as batch:
        batch.drop_column('address')
