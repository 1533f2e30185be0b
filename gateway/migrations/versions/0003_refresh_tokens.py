"""The gateway's sessions: refresh tokens (stored as hashes) and the deny
list of signed-out access tokens (when it is not kept in Redis).

Revision ID: 0003_refresh_tokens
Revises: 0002_contact
"""
from alembic import op
import sqlalchemy as sa


revision = '0003_refresh_tokens'
down_revision = '0002_contact'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('refresh_tokens',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('session_id', sa.String(length=64), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=True),
    sa.Column('issued_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.Column('used_at', sa.Float(), nullable=True),
    sa.Column('revoked_at', sa.Float(), nullable=True),
    sa.Column('access_jti', sa.String(length=64), nullable=False),
    sa.Column('access_expires_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_refresh_tokens'))
    )
    op.create_index(op.f('ix_refresh_tokens_session_id'), 'refresh_tokens', ['session_id'], unique=False)
    op.create_index(op.f('ix_refresh_tokens_expires_at'), 'refresh_tokens', ['expires_at'], unique=False)
    op.create_table('denied_tokens',
    sa.Column('jti', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('jti', name=op.f('pk_denied_tokens'))
    )
    op.create_index(op.f('ix_denied_tokens_expires_at'), 'denied_tokens', ['expires_at'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_denied_tokens_expires_at'), table_name='denied_tokens')
    op.drop_table('denied_tokens')
    op.drop_index(op.f('ix_refresh_tokens_expires_at'), table_name='refresh_tokens')
    op.drop_index(op.f('ix_refresh_tokens_session_id'), table_name='refresh_tokens')
    op.drop_table('refresh_tokens')
