"""The titles a service keeps for itself (book_id -> title), learnt from
``book_registered``: MyPage shows them, notification writes them into its
notices. Each service has its own table in its own database; its shape and
its two accessors are defined here once."""
from sqlalchemy import Column, Integer, String, Table, bindparam, select


class Titles:
    def __init__(self, metadata):
        self.table = Table(
            "titles", metadata,
            Column("book_id", Integer, primary_key=True),
            Column("title", String(300), nullable=False),
        )
        # Made once: a notice reads its title on every event.
        self._title_of = select(self.table.c.title).where(self.table.c.book_id == bindparam("book_id"))

    def title_of(self, session, book_id):
        return session.scalar(self._title_of, {"book_id": book_id})

    def save(self, session, book_id, title):
        """Once: a title never changes, and a redelivered event changes nothing."""
        if self.title_of(session, book_id) is None:
            session.execute(self.table.insert().values(book_id=book_id, title=title))
