"""The delivery service: Nameko adapters around ``delivery.domain``.

Inbound: RPC for the gateway (list, ship, deliver) and for ``reservation``'s
synchronous cancel and its recovery (statuses); handlers for ``reservation``'s events (confirmed creates
a delivery, canceled cancels it). Outbound: the store and its outbox, through
the repository (``delivery.models.Deliveries``), never a session.
It never calls ``reservation``, so couriers keep working while it is down.
"""
import logging
import uuid

from sqlalchemy.exc import IntegrityError

from common import faults
from common.errors import NotFound
from common.events import now_iso
from common.handlers import handles
from common.outbox import emit_all
from common.rpc import rpc
from common.service import ServiceBase
from delivery import models
from delivery.domain import DELIVERED, Delivery

log = logging.getLogger(__name__)

MAX_STATUSES = 500  # reservations per statuses call


class DeliveryService(ServiceBase):
    name = "delivery"

    store = models.DeliveryStore(models.Base)

    @rpc
    def list(self, status=None, after_seq=0, limit=100):
        with self.store.deliveries() as deliveries:
            rows = deliveries.page(status, after_seq, limit + 1)
            return {"items": [row.to_dict() for row in rows[:limit]],
                    "next": rows[limit - 1].seq if len(rows) > limit else None}

    @rpc
    def get(self, delivery_id):
        with self.store.deliveries() as deliveries:
            return self._find(deliveries, delivery_id).to_dict()

    @rpc
    def ship(self, delivery_id):
        return self._step(delivery_id, Delivery.ship)

    @rpc
    def deliver(self, delivery_id):
        return self._step(delivery_id, Delivery.deliver)

    @rpc
    def cancel(self, reservation_id, book_id, customer):
        """The synchronous half of a reservation's cancel: when this returns,
        the delivery is canceled, even one that did not exist yet. It is
        committed only while the caller still waits (the deadline travels
        with the call), and ``delivery_canceled`` tells reservation even if
        the answer is lost."""
        try:
            with self.store.transaction() as tx:
                delivery = tx.deliveries.for_reservation(reservation_id)
                if delivery is None:
                    delivery, caused = Delivery.canceled_before_created(
                        str(uuid.uuid4()), reservation_id, book_id, customer, now_iso())
                    tx.deliveries.add(delivery)
                else:
                    caused = delivery.cancel(now_iso())
                emit_all(tx, caused)
                result = delivery.to_dict()
        except IntegrityError:  # the confirmation created it at this very moment
            return self.cancel(reservation_id, book_id, customer)
        log.info("delivery canceled", extra={"delivery_id": result["id"], "reservation_id": reservation_id})
        faults.point("delivery.cancel.before-reply")
        return result

    @rpc
    def statuses(self, reservation_ids):
        """{reservation id: the status of its delivery, or None when it has
        none}: what reservation's cancel recovery needs to know."""
        reservation_ids = list(reservation_ids)[:MAX_STATUSES]
        with self.store.deliveries() as deliveries:
            found = deliveries.statuses(reservation_ids)
        return {rid: found.get(rid) for rid in reservation_ids}

    # -- what the reservations tell us ----------------------------------

    @handles("reservation", "reservation_confirmed")
    def on_reservation_confirmed(self, tx, event):
        if tx.deliveries.for_reservation(event["reservation_id"]) is not None:
            return  # already created, or canceled before we got here
        delivery, caused = Delivery.prepare(
            str(uuid.uuid4()), event["reservation_id"], event["book_id"], event["customer"], now_iso(),
            event.get("address"))
        tx.deliveries.add(delivery)
        emit_all(tx, caused)

    @handles("reservation", "reservation_canceled")
    def on_reservation_canceled(self, tx, event):
        delivery = tx.deliveries.for_reservation(event["reservation_id"])
        if delivery is not None and delivery.status != DELIVERED:
            emit_all(tx, delivery.cancel(now_iso()))

    # -- helpers --------------------------------------------------------

    def _step(self, delivery_id, step):
        with self.store.transaction() as tx:
            delivery = self._find(tx.deliveries, delivery_id)
            emit_all(tx, step(delivery, now_iso()))
            result = delivery.to_dict()
        log.info("delivery %s", result["status"], extra={"delivery_id": delivery_id,
                                                          "reservation_id": result["reservation_id"]})
        return result

    @staticmethod
    def _find(deliveries, delivery_id):
        delivery = deliveries.get(delivery_id)
        if delivery is None:
            raise NotFound("no such delivery", delivery_id=delivery_id)
        return delivery
