"""The gateway's account and session routes over an in-memory repository.

As tests/unit/test_delivery_repository.py does for delivery: the real route
methods (``worker_factory``) over a fake store whose transactions carry an
in-memory ``Accounts`` (gateway.models), no database at all; the token
authority is a fake that counts what it issued and remembers what it denied.
A check over both the fake and the real repository (in-memory SQLite) keeps
the two alike."""
import contextlib
import itertools
import json
import time
import types

import pytest
from nameko.testing.services import worker_factory
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from common.errors import NotAllowed, NotFound
from gateway import auth, models, sessions
from gateway.domain import Account
from gateway.errors import OAuthError
from gateway.service import GatewayService

PASSWORD = "a-long-pass-123"


class InMemoryAccounts:
    """What ``gateway.models.Accounts`` does, in dicts."""

    def __init__(self):
        self.accounts, self.tokens = {}, {}

    def find(self, username):
        return self.accounts.get(username)

    def name_taken(self, username):
        return any(name.lower() == username.lower() for name in self.accounts)

    def add(self, account):
        self.accounts[account.username] = account

    def address_of(self, username):
        account = self.accounts.get(username)
        return None if account is None else account.address

    def everyone(self):
        return [self.accounts[name] for name in sorted(self.accounts)]

    def add_refresh_token(self, token_hash, session_id, username, client_id, issued_at, expires_at, access):
        self.tokens[token_hash] = {
            "token_hash": token_hash, "session_id": session_id, "username": username, "client_id": client_id,
            "issued_at": issued_at, "expires_at": expires_at, "used_at": None, "revoked_at": None,
            "access_jti": access[0], "access_expires_at": access[1]}

    def refresh_token(self, token_hash):
        row = self.tokens.get(token_hash)
        return None if row is None else dict(row)

    def use_refresh_token(self, token_hash, now):
        row = self.tokens[token_hash]
        if row["used_at"] is not None:
            return False
        row["used_at"] = now
        return True

    def revoke_session(self, session_id, now):
        rows = [row for row in self.tokens.values() if row["session_id"] == session_id]
        live = [(row["access_jti"], row["access_expires_at"]) for row in rows if row["access_expires_at"] > now]
        for row in rows:
            if row["revoked_at"] is None:
                row["revoked_at"] = now
        return live

    def forget_refresh_tokens(self, expired_before):
        for token_hash in [h for h, row in self.tokens.items() if row["expires_at"] < expired_before]:
            del self.tokens[token_hash]


class InMemoryStore:
    """The AccountStore's route-facing shape: ``transaction()`` ->
    ``tx.accounts``, ``tx.emit``; ``accounts()``; ``address_of``. Committed transactions add
    what they emitted to ``outbox``."""

    def __init__(self):
        self.repository = InMemoryAccounts()
        self.outbox = []

    @contextlib.contextmanager
    def transaction(self, deadline=None):
        tx = types.SimpleNamespace(accounts=self.repository, emitted=[])
        tx.emit = lambda event_type, **fields: tx.emitted.append((event_type, fields))
        yield tx
        self.outbox += tx.emitted

    @contextlib.contextmanager
    def accounts(self):
        yield self.repository

    def address_of(self, username):
        return self.repository.address_of(username)


class FakeTokens:
    """``authority.tokens``: numbered access tokens, an hour each."""

    def __init__(self):
        self.numbers = itertools.count(1)

    def issue(self, username, role, session_id):
        n, now = next(self.numbers), int(time.time())
        return f"access-{n}", {"sub": username, "role": role, "jti": f"jti-{n}", "iat": now, "exp": now + 3600,
                               "sid": session_id}


class FakeDenyList:
    def __init__(self):
        self.denied = []

    def deny(self, entries):
        self.denied += [jti for jti, _ in entries]


@pytest.fixture
def memory():
    return InMemoryStore()


@pytest.fixture
def gateway(memory):
    service = worker_factory(GatewayService, store=memory)
    service.authority = types.SimpleNamespace(tokens=FakeTokens(), deny_list=FakeDenyList())
    service.config = {}
    return service


def sign_up(gateway, username, **contact):
    return gateway.register(None, {"username": username, "password": PASSWORD, **contact})


def sign_in(gateway, username):
    return json.loads(gateway.issue_token(None, {"username": username, "password": PASSWORD}, None, None).data)


def refresh(gateway, token):
    answer = gateway.issue_token(None, None, {"grant_type": "refresh_token", "refresh_token": token,
                                              "client_id": None}, None)
    return json.loads(answer.data)


def test_a_customer_signs_up_once_in_any_case_and_is_announced(gateway, memory):
    assert sign_up(gateway, "carol", email="carol@example.org") == {"username": "carol", "role": "customer"}
    with pytest.raises(NotAllowed):
        sign_up(gateway, "Carol")

    assert memory.repository.find("carol").role == "customer" and memory.repository.find("Carol") is None
    assert memory.outbox == [("customer_updated", {"customer": "carol", "email": "carol@example.org",
                                                   "address": None})]


def test_a_contact_change_is_saved_and_announced_only_when_something_changed(gateway, memory):
    sign_up(gateway, "carol")
    carol = {"username": "carol"}

    assert gateway.change_account(None, carol, {"address": "1 Main St"})["address"] == "1 Main St"
    gateway.change_account(None, carol, {"address": "1 Main St"})  # the same again

    assert gateway.get_account(None, carol)["address"] == "1 Main St"
    assert gateway._default_address(carol) == "1 Main St"
    assert [fields["address"] for _, fields in memory.outbox] == [None, "1 Main St"]
    with pytest.raises(NotFound):
        gateway.get_account(None, {"username": "nobody"})


def test_a_refresh_rotates_the_token_and_a_reuse_ends_the_session(gateway, memory):
    sign_up(gateway, "carol")
    first = sign_in(gateway, "carol")
    second = refresh(gateway, first["refresh_token"])
    assert second["access_token"] == "access-2" and second["refresh_token"] != first["refresh_token"]

    with pytest.raises(OAuthError):
        refresh(gateway, first["refresh_token"])  # used already: someone else holds the family
    assert sorted(gateway.authority.deny_list.denied) == ["jti-1", "jti-2"]
    with pytest.raises(OAuthError):
        refresh(gateway, second["refresh_token"])  # the whole session has ended


def test_a_wrong_password_or_an_unknown_name_is_refused_alike(gateway):
    sign_up(gateway, "carol")
    for username, password in (("carol", "wrong-password-1"), ("nobody", PASSWORD)):
        with pytest.raises(Exception, match="wrong username or password"):
            gateway.issue_token(None, {"username": username, "password": password}, None, None)


def test_a_sign_out_revokes_the_session_and_denies_its_other_access_tokens(gateway, memory):
    sign_up(gateway, "carol")
    first = sign_in(gateway, "carol")
    second = refresh(gateway, first["refresh_token"])
    session_id = next(iter(memory.repository.tokens.values()))["session_id"]

    gateway.logout(None, {"username": "carol", "jti": "jti-2", "exp": time.time() + 3600, "session": session_id})

    assert sorted(gateway.authority.deny_list.denied) == ["jti-1", "jti-2"]
    with pytest.raises(OAuthError):
        refresh(gateway, second["refresh_token"])


# -- the fake and the real repository alike ------------------------------------

@pytest.fixture(params=["in-memory", "sqlite"])
def repository(request):
    if request.param == "in-memory":
        yield InMemoryAccounts()
        return
    engine = create_engine("sqlite://")
    models.Base.metadata.create_all(engine)
    with sessionmaker(bind=engine)() as session:
        yield models.Accounts(session)


def test_the_real_repository_answers_as_the_fake_does(repository):
    repository.add(Account("bob", auth.hash_password(PASSWORD), "customer", None, "3 Chapter Street"))
    repository.add(Account("ada", auth.hash_password(PASSWORD), "librarian"))
    assert [a.username for a in repository.everyone()] == ["ada", "bob"]
    assert repository.name_taken("BOB") and not repository.name_taken("carol")
    assert repository.address_of("bob") == "3 Chapter Street" and repository.address_of("ada") is None
    assert repository.find("nobody") is None

    now = 1000.0
    token = sessions.issue(repository, "s1", "bob", "web", ("a1", now + 60), now, ttl=100)
    assert sessions.use(repository, token, now + 1, "web") == ("s1", "bob", "web")
    assert not repository.use_refresh_token(sessions.digest(token), now + 2)  # once only
    later = sessions.issue(repository, "s1", "bob", "web", ("a2", now + 61), now + 1, ttl=100)
    assert sorted(sessions.revoke(repository, "s1", now + 60)) == [("a2", now + 61)]  # a1 has expired
    assert repository.refresh_token(sessions.digest(later))["revoked_at"] == now + 60

    sessions.prune(repository, now + 101 + sessions.PRUNE_AFTER)  # a day after the first expired
    assert repository.refresh_token(sessions.digest(token)) is None
    assert repository.refresh_token(sessions.digest(later)) is not None  # not yet a day for this one
