"""The live MyPage hub and its tickets (gateway/live.py), without a broker."""
import time

import pytest

from gateway import auth
from gateway.errors import Unauthorized
from gateway.keys import KeySource
from gateway.live import TICKET_TTL, Hub, change, stream

ALICE = {"username": "alice", "role": "customer"}


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return auth.Tokens(KeySource(str(tmp_path_factory.mktemp("keys") / "token-keys.pem"), create=True))


@pytest.fixture(scope="module")
def other_tokens(tmp_path_factory):
    """Another gateway's: its tickets mean nothing here."""
    return auth.Tokens(KeySource(str(tmp_path_factory.mktemp("other") / "token-keys.pem"), create=True))


def lines(chunks):
    return b"".join(chunks).decode()


def test_a_change_reaches_the_open_streams_of_its_customer_only():
    hub = Hub()
    alice_1, alice_2, bob = hub.subscribe("alice"), hub.subscribe("alice"), hub.subscribe("bob")
    assert hub.publish("alice", {"reservation_id": "r1"}) == 2
    assert alice_1.get(0.1) == alice_2.get(0.1) == {"reservation_id": "r1"}
    assert bob.get(0.01) is None
    assert hub.publish("carol", {"reservation_id": "r2"}) == 0


def test_the_stream_says_ready_then_each_change_then_ends_when_closed():
    hub = Hub()
    subscription = hub.subscribe("alice")
    body = stream(subscription, heartbeat=0.01)
    first = next(body).decode()
    assert first.startswith("retry: ") and "event: ready\n" in first
    assert next(body) == b": keep-alive\n\n"  # nothing happened: a comment keeps proxies from closing it
    hub.publish("alice", change({"reservation_id": "r1", "book_id": 7, "customer": "alice", "status": "shipped",
                                 "delivery_status": "shipped", "event_type": "mypage_changed"}))
    event = next(body).decode()
    assert event.startswith("event: mypage_changed\ndata: {") and event.endswith("\n\n")
    assert '"status":"shipped"' in event and "customer" not in event
    hub.close()
    assert list(body) == []
    assert hub.count() == 0


def test_a_stream_ends_when_the_sign_in_behind_it_expires():
    subscription = Hub().subscribe("alice", until=time.time() - 1)
    assert "event: expired" in lines(list(stream(subscription, heartbeat=0.01)))


def test_a_stream_that_ends_unsubscribes():
    hub = Hub()
    body = stream(hub.subscribe("alice"), heartbeat=0.01)
    next(body)
    body.close()  # the browser went away
    assert hub.count("alice") == 0


def test_too_many_streams_of_one_customer_close_the_oldest():
    hub = Hub(max_per_customer=2)
    oldest, middle, newest = (hub.subscribe("alice") for _ in range(3))
    assert oldest.closed and not middle.closed and not newest.closed
    assert hub.count("alice") == 2


def test_a_slow_stream_drops_changes_beyond_its_queue_and_never_blocks_the_publisher():
    hub = Hub()
    subscription = hub.subscribe("alice")
    for number in range(500):
        hub.publish("alice", {"n": number})
    assert subscription.queue.qsize() == subscription.queue.maxsize


def test_a_closing_hub_refuses_new_streams():
    hub = Hub()
    hub.close()
    with pytest.raises(Exception) as raised:
        hub.subscribe("alice")
    assert "shutting down" in str(raised.value)


# -- tickets -------------------------------------------------------------------

def test_a_ticket_names_its_customer_and_opens_one_stream_only(tokens):
    hub = Hub()
    until = int(time.time()) + 600
    issued = hub.issue_ticket(tokens, ALICE, until)
    assert issued["expires_in"] == TICKET_TTL == 30
    assert hub.redeem_ticket(tokens, issued["ticket"]) == {"username": "alice", "role": "customer", "until": until}
    with pytest.raises(Unauthorized, match="used"):
        hub.redeem_ticket(tokens, issued["ticket"])


def test_a_ticket_is_not_a_bearer_token(tokens):
    ticket = Hub().issue_ticket(tokens, ALICE, time.time() + 600)["ticket"]
    assert tokens.verify(ticket) is None


@pytest.mark.parametrize("make", [
    pytest.param(lambda hub, tokens, other: "not-a-ticket", id="garbage"),
    pytest.param(lambda hub, tokens, other: tokens.issue("alice", "customer", "s")[0], id="a bearer token"),
    pytest.param(lambda hub, tokens, other: hub.issue_ticket(tokens, {"username": "courier", "role": "courier"},
                                                             time.time() + 60)["ticket"], id="not a customer"),
    pytest.param(lambda hub, tokens, other: hub.issue_ticket(other, ALICE, time.time() + 60)["ticket"],
                 id="another key"),
])
def test_only_a_ticket_this_gateway_signed_for_a_customer_is_accepted(tokens, other_tokens, make):
    hub = Hub()
    with pytest.raises(Unauthorized):
        hub.redeem_ticket(tokens, make(hub, tokens, other_tokens))


def test_an_expired_ticket_is_refused(tokens):
    now = int(time.time())
    ticket = tokens.sign({"sub": "alice", "role": "customer", "iat": now - 60, "exp": now - 30, "iss": auth.ISSUER,
                          "aud": "bookrental-mypage-events", "jti": "x", "until": now + 600})
    with pytest.raises(Unauthorized, match="expired"):
        Hub().redeem_ticket(tokens, ticket)
