"""The mypage service's initial schema: what create_all made before migrations.

Revision ID: 0001
Revises: (none)
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('outbox',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('published_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_outbox')),
    sa.UniqueConstraint('event_id', name=op.f('uq_outbox_event_id'))
    )
    op.create_index(op.f('ix_outbox_published_at'), 'outbox', ['published_at'], unique=False)
    op.create_table('processed_events',
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('handler', sa.String(length=100), nullable=False),
    sa.Column('processed_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('event_id', 'handler', name=op.f('pk_processed_events'))
    )
    op.create_table('reservation_views',
    sa.Column('reservation_id', sa.String(length=36), nullable=False),
    sa.Column('customer', sa.String(length=64), nullable=False),
    sa.Column('book_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=True),
    sa.Column('delivery_status', sa.String(length=16), nullable=True),
    sa.Column('created_at', sa.String(length=40), nullable=True),
    sa.Column('updated_at', sa.String(length=40), nullable=True),
    sa.Column('history', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('reservation_id', name=op.f('pk_reservation_views'))
    )
    op.create_index(op.f('ix_reservation_views_customer'), 'reservation_views', ['customer'], unique=False)
    op.create_table('titles',
    sa.Column('book_id', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.PrimaryKeyConstraint('book_id', name=op.f('pk_titles'))
    )


def downgrade():
    op.drop_table('titles')
    op.drop_index(op.f('ix_reservation_views_customer'), table_name='reservation_views')
    op.drop_table('reservation_views')
    op.drop_table('processed_events')
    op.drop_index(op.f('ix_outbox_published_at'), table_name='outbox')
    op.drop_table('outbox')
