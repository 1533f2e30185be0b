"""MyPage a page at a time (SPEC §5): the keyset that says where the next
page starts (mypage.domain.page) and the opaque cursor that carries it
through the API (gateway.schemas.KeysetCursor, keyset_cursor)."""
import base64

import pytest
from marshmallow import ValidationError

from gateway.schemas import MyPageQuery, keyset_cursor
from mypage.domain import ReservationView, page


def view(reservation_id, created_at):
    found = ReservationView(reservation_id, "alice", 7)
    found.created_at = created_at
    return found


ROWS = [(view(f"r-{n}", f"2026-01-01T10:00:0{n}+00:00"), "Dune") for n in (5, 4, 3, 2, 1)]  # newest first


def test_a_page_ends_where_the_next_one_starts():
    shown, following = page(ROWS[:3], 2)  # asked for one more than the page: there is a next
    assert [v.reservation_id for v, _ in shown] == ["r-5", "r-4"]
    assert following == ("2026-01-01T10:00:04+00:00", "r-4")


def test_the_last_page_has_no_next():
    assert page(ROWS[3:], 2) == (ROWS[3:], None)
    assert page(ROWS[4:], 2) == (ROWS[4:], None)
    assert page([], 2) == ([], None)


def test_a_view_without_a_creation_time_sorts_as_the_oldest():
    assert page([(view("r-9", None), None), (view("r-8", None), None)], 1)[1] == ("", "r-9")


@pytest.mark.parametrize("key", [("2026-01-01T10:00:04.123456+00:00", "0b6f5c3e-2f7e-4c1a-9c1e-3a5b7c9d1e2f"),
                                 ("", "r-1"), ("2026-01-01T10:00:04+00:00", '"/+= ?&\\'), ('"' * 40, "\\" * 36)])
def test_a_cursor_loads_as_the_key_it_was_made_from(key):
    cursor = keyset_cursor(key)
    assert cursor.isascii() and "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert MyPageQuery().load({"cursor": cursor}) == {"limit": 100, "cursor": key}


def test_no_next_page_no_cursor():
    assert keyset_cursor(None) is None
    assert MyPageQuery().load({}) == {"limit": 100, "cursor": None}


def b64(raw):
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    "", "!!", "12 34", "x" * 257, keyset_cursor(("a", "r-1")) + "\n", "a",  # not base64url, or too long
    b64(b"not json"), b64(b"\xff\xfe"), b64(b'{"a": 1}'), b64(b'["a"]'), b64(b'["a", "b", "c"]'),
    b64(b'["a", 1]'), b64(b'["a", ""]'), b64(b'["a", "r\\u0000"]'), b64('["a", "é"]'.encode()), b64(b'["\\ud800", "r"]'),
    keyset_cursor(("x" * 41, "r-1")), keyset_cursor(("a", "r" * 37)),
])
def test_anything_else_is_not_a_cursor(cursor):
    with pytest.raises(ValidationError) as refused:
        MyPageQuery().load({"cursor": cursor})
    assert refused.value.messages == {"cursor": ["not a cursor"]}


@pytest.mark.parametrize("limit", ["0", "501", "-1", "ten"])
def test_a_page_holds_1_to_500_rows(limit):
    with pytest.raises(ValidationError) as refused:
        MyPageQuery().load({"limit": limit})
    assert list(refused.value.messages) == ["limit"]
    assert MyPageQuery().load({"limit": "500"})["limit"] == 500


def test_a_query_names_only_limit_and_cursor():
    with pytest.raises(ValidationError) as refused:
        MyPageQuery().load({"customer": "bob"})
    assert list(refused.value.messages) == ["customer"]
