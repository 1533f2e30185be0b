"""One title per ISBN, kept as its 13 digits (SPEC §5).

Titles registered before are brought in line: a valid ISBN-10 or -13 is
rewritten as its 13 digits; one that is not valid stays as it was (it can
no longer be typed in, but the title is kept). A title whose ISBN another,
older title already has keeps its ISBN with ``~dup<id>`` after it, so that
nothing is lost and the index can be made; each such title is logged.

Revision ID: 0002_isbn_unique
Revises: 0001
"""
import logging

from alembic import op
import sqlalchemy as sa

from common import isbn as isbns

revision = '0002_isbn_unique'
down_revision = '0001'
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)
WIDTH = 32  # titles.isbn is String(32)


def _key(isbn):
    try:
        return isbns.to_isbn13(isbn)
    except ValueError:
        return isbn


def upgrade():
    connection = op.get_bind()
    titles = sa.table('titles', sa.column('id', sa.Integer), sa.column('isbn', sa.String))
    seen = set()
    for book_id, isbn in connection.execute(sa.select(titles.c.id, titles.c.isbn).order_by(titles.c.id)).all():
        key = _key(isbn)
        if key in seen:
            suffix = f"~dup{book_id}"
            key = key[:WIDTH - len(suffix)] + suffix
            log.warning("title %s: ISBN %s is another title's already; kept as %s", book_id, isbn, key)
        seen.add(key)
        if key != isbn:
            connection.execute(titles.update().where(titles.c.id == book_id).values(isbn=key))
    # A database made by create_all (stamped 0001, common.migrate) may have it already.
    if 'uq_titles_isbn' not in {index['name'] for index in sa.inspect(connection).get_indexes('titles')}:
        op.create_index('uq_titles_isbn', 'titles', ['isbn'], unique=True)


def downgrade():
    op.drop_index('uq_titles_isbn', table_name='titles')
