"""The gateway's caches (gateway.cache) and its verified-token memory (gateway.auth.Tokens)."""
import time

import eventlet
import pytest

from gateway import auth
from gateway.cache import KnownBooks, PageCache
from gateway.keys import KeySource


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_page_is_fetched_once_then_served_until_it_changes():
    pages, calls = PageCache(max_age=2.0), []

    def fetch():
        calls.append(1)
        return b'{"n": %d}' % len(calls)

    assert pages.page("alice", fetch) == b'{"n": 1}'
    assert pages.page("alice", fetch) == b'{"n": 1}'
    pages.invalidate("alice")
    assert pages.page("alice", fetch) == b'{"n": 2}'
    assert len(calls) == 2


def test_each_page_of_a_customer_is_kept_apart_and_a_change_drops_them_all():
    pages = PageCache(max_age=2.0)
    assert pages.page("alice", lambda: b"first", part=(100, None)) == b"first"
    assert pages.page("alice", lambda: b"second", part=(100, ("t", "r-1"))) == b"second"
    assert pages.page("alice", lambda: b"small", part=(2, None)) == b"small"
    assert pages.page("bob", lambda: b"bob's", part=(100, None)) == b"bob's"
    assert pages.page("alice", lambda: b"again", part=(100, None)) == b"first"
    assert pages.size == len(b"first" + b"second" + b"small" + b"bob's")
    pages.invalidate("alice")
    assert pages.page("alice", lambda: b"new", part=(100, ("t", "r-1"))) == b"new"
    assert pages.page("alice", lambda: b"new first", part=(100, None)) == b"new first"
    assert pages.page("bob", lambda: b"refetched", part=(100, None)) == b"bob's"
    assert pages.size == len(b"new" + b"new first" + b"bob's") and set(pages.parts) == {"alice", "bob"}


def test_a_page_expires_after_max_age():
    clock = Clock()
    pages = PageCache(max_age=2.0, clock=clock)
    pages.page("alice", lambda: b"old")
    clock.now += 2.5
    assert pages.page("alice", lambda: b"new") == b"new"


def test_an_answer_fetched_while_the_page_changed_is_not_kept():
    pages = PageCache(max_age=60)

    def fetch_then_change():
        pages.invalidate("alice")  # the change arrives while the fetch is in flight
        return b"maybe older than the change"

    assert pages.page("alice", fetch_then_change) == b"maybe older than the change"
    assert pages.page("alice", lambda: b"fresh") == b"fresh"


def test_concurrent_misses_share_one_fetch():
    pages, calls = PageCache(max_age=60), []

    def slow_fetch():
        calls.append(1)
        eventlet.sleep(0.05)
        return b"page"

    pool = eventlet.GreenPool()
    answers = list(pool.imap(lambda _: pages.page("alice", slow_fetch), range(10)))
    assert answers == [b"page"] * 10
    assert len(calls) == 1


def test_a_failed_fetch_is_not_kept_and_the_next_request_tries_again():
    pages = PageCache(max_age=60)

    def failing():
        raise RuntimeError("mypage is down")

    try:
        pages.page("alice", failing)
    except RuntimeError:
        pass
    assert pages.page("alice", lambda: b"back") == b"back"


def test_the_cache_is_bounded_in_pages_and_bytes():
    pages = PageCache(max_age=60, max_pages=3, max_bytes=1000)
    for n in range(5):
        pages.page(f"c{n}", lambda: b"x" * 100)
    assert len(pages.entries) == 3 and pages.size == 300
    pages.page("big", lambda: b"y" * 240)  # one page too many: the least recently used goes
    assert len(pages.entries) == 3 and pages.size == 440


def test_known_books_remembers_only_what_it_is_told():
    books = KnownBooks(max_size=2)
    assert 1 not in books
    books.add(1)
    books.add(2)
    books.add(3)  # full: not remembered, so asked again, never wrongly trusted
    assert 1 in books and 2 in books and 3 not in books


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return KeySource(str(tmp_path_factory.mktemp("keys") / "token-keys.pem"), create=True)


def _token(keys, **claims):
    now = int(time.time())
    base = {"sub": "alice", "role": "customer", "iat": now, "nbf": now, "exp": now + 60,
            "iss": auth.ISSUER, "aud": auth.AUDIENCE, "jti": "j-" + str(now)}
    return auth.Tokens(keys).sign({**base, **claims})


def test_a_remembered_token_still_expires(keys):
    tokens = auth.Tokens(keys)
    token = _token(keys, exp=int(time.time()) + 1)
    assert tokens.verify(token)["username"] == "alice"
    assert tokens.verify(token)["username"] == "alice"
    time.sleep(2.1)
    assert tokens.verify(token) is None


def test_a_remembered_token_is_refused_once_denied(keys):
    denied = set()
    tokens = auth.Tokens(keys, denied)
    token = _token(keys, jti="signed-out")
    assert tokens.verify(token) is not None
    denied.add("signed-out")
    assert tokens.verify(token) is None


def test_a_token_not_yet_valid_is_refused_and_not_remembered(keys):
    tokens = auth.Tokens(keys)
    token = _token(keys, nbf=int(time.time()) + 60)
    assert tokens.verify(token) is None
    assert token not in tokens._verified
