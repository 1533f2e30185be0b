"""A title's line, for queue_position: the waitlisted views of a title in
the order they are served (mypage.domain), found by an index.

queue_position itself is counted when a page is read, from the views as
they are, so nothing is stored and no row needs rewriting.

Revision ID: 0002_queue_position
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002_queue_position'
down_revision = '0001'
branch_labels = None
depends_on = None

INDEX = 'ix_reservation_views_line'


def upgrade():
    # A database made by create_all (stamped 0001, common.migrate) may have it already.
    if INDEX not in {index['name'] for index in sa.inspect(op.get_bind()).get_indexes('reservation_views')}:
        op.create_index(INDEX, 'reservation_views', ['book_id', 'status', 'created_at', 'reservation_id'],
                        unique=False)


def downgrade():
    op.drop_index(INDEX, table_name='reservation_views')
