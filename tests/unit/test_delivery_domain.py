"""A delivery's life (SPEC §3): preparing -> shipped -> delivered, or canceled."""
import pytest

from common.errors import NotAllowed
from common.events import TYPES
from common.lifecycle import DELIVERY_STATUSES as STATUSES
from delivery.domain import CANCELED, DELIVERED, PREPARING, SHIPPED, Delivery
from helpers import event_types


def at(minute):
    return f"2024-05-01T10:{minute:02d}:00.000000+00:00"


def delivery_in(status):
    """A delivery brought to ``status`` along the legal path, at minutes 0..2."""
    delivery, _ = Delivery.prepare("d-1", "r-1", 7, "alice", at(0))
    path = {
        PREPARING: [],
        SHIPPED: [Delivery.ship],
        DELIVERED: [Delivery.ship, Delivery.deliver],
        CANCELED: [Delivery.cancel],
    }[status]
    for minute, step in enumerate(path, start=1):
        step(delivery, at(minute))
    assert delivery.status == status
    return delivery


def test_a_confirmed_reservation_gets_a_delivery_in_preparation():
    delivery, caused = Delivery.prepare("d-1", "r-1", 7, "alice", at(0))

    assert delivery.status == PREPARING
    assert event_types(caused) == ["delivery_created"]
    assert delivery.created_at == delivery.updated_at == at(0)
    assert delivery.to_dict() == {"id": "d-1", "reservation_id": "r-1", "book_id": 7,
                                  "customer": "alice", "address": None, "status": "preparing"}
    assert delivery.event_fields() == {"delivery_id": "d-1", "reservation_id": "r-1", "book_id": 7,
                                       "customer": "alice", "status": "preparing"}


def test_a_delivery_goes_where_the_reservation_said():
    delivery, _ = Delivery.prepare("d-1", "r-1", 7, "alice", at(0), address="12 Reading Lane\nBooktown")

    assert delivery.to_dict()["address"] == "12 Reading Lane\nBooktown"
    assert "address" not in delivery.event_fields()  # the delivery events do not carry it


def test_the_courier_ships_a_prepared_delivery():
    delivery = delivery_in(PREPARING)

    assert event_types(delivery.ship(at(30))) == ["delivery_shipped"]
    assert delivery.status == SHIPPED
    assert delivery.updated_at == at(30)


def test_the_courier_delivers_a_shipped_delivery():
    delivery = delivery_in(SHIPPED)

    assert event_types(delivery.deliver(at(30))) == ["delivery_delivered"]
    assert delivery.status == DELIVERED
    assert delivery.updated_at == at(30)


@pytest.mark.parametrize("status", [SHIPPED, DELIVERED, CANCELED])
def test_only_a_delivery_in_preparation_can_be_shipped(status):
    delivery = delivery_in(status)
    updated_at = delivery.updated_at

    with pytest.raises(NotAllowed) as refused:
        delivery.ship(at(30))

    assert refused.value.details == {"status": status}
    assert (delivery.status, delivery.updated_at) == (status, updated_at)


@pytest.mark.parametrize("status", [PREPARING, DELIVERED, CANCELED])
def test_only_a_shipped_delivery_can_be_delivered(status):
    delivery = delivery_in(status)
    updated_at = delivery.updated_at

    with pytest.raises(NotAllowed) as refused:
        delivery.deliver(at(30))

    assert refused.value.details == {"status": status}
    assert (delivery.status, delivery.updated_at) == (status, updated_at)


@pytest.mark.parametrize("status", [PREPARING, SHIPPED])
def test_a_delivery_is_canceled_with_its_reservation_until_delivered(status):
    delivery = delivery_in(status)

    assert event_types(delivery.cancel(at(30))) == ["delivery_canceled"]
    assert delivery.status == CANCELED
    assert delivery.updated_at == at(30)


def test_canceling_a_delivery_twice_changes_nothing():
    delivery = delivery_in(SHIPPED)
    delivery.cancel(at(30))

    assert delivery.cancel(at(40)) == []
    assert (delivery.status, delivery.updated_at) == (CANCELED, at(30))


def test_a_delivered_book_cannot_be_canceled():
    delivery = delivery_in(DELIVERED)

    with pytest.raises(NotAllowed) as refused:
        delivery.cancel(at(30))

    assert refused.value.details == {"status": DELIVERED}
    assert delivery.status == DELIVERED


def test_a_cancel_that_overtakes_the_confirmation_creates_the_delivery_canceled():
    delivery, caused = Delivery.canceled_before_created("d-1", "r-1", 7, "alice", at(0))

    assert delivery.status == CANCELED
    assert event_types(caused) == ["delivery_canceled"]
    assert delivery.created_at == delivery.updated_at == at(0)
    # the reservation_canceled event arriving later finds it canceled already
    assert delivery.cancel(at(10)) == []
    with pytest.raises(NotAllowed):
        delivery.ship(at(10))


def test_every_event_a_delivery_causes_is_a_declared_event_type():
    caused = Delivery.prepare("d-1", "r-1", 7, "alice", at(0))[1]
    caused += Delivery.canceled_before_created("d-2", "r-2", 7, "alice", at(0))[1]
    for status in STATUSES:
        for step in (Delivery.ship, Delivery.deliver, Delivery.cancel):
            try:
                caused += step(delivery_in(status), at(30))
            except NotAllowed:
                pass

    assert set(event_types(caused)) <= set(TYPES)
    assert set(event_types(caused)) == {
        "delivery_created", "delivery_shipped", "delivery_delivered", "delivery_canceled"}
