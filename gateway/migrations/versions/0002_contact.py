"""Accounts gain a contact: an email (where notices go) and an address (where books go).

Revision ID: 0002_contact
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002_contact'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('accounts') as batch:
        batch.add_column(sa.Column('email', sa.String(length=254), nullable=True))
        batch.add_column(sa.Column('address', sa.String(length=300), nullable=True))


def downgrade():
    with op.batch_alter_table('accounts') as batch:
        batch.drop_column('address')
        batch.drop_column('email')
