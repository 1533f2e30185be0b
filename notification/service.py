"""The notification service: tells customers what happened to their reservations.

A read model like ``mypage``, built only from events; it never calls another
service. Inbound: handlers for the reservation events that cause a notice
(confirmed, shipped, delivered, overdue, canceled by the library), for the
ones that end a loan, for the gateway's ``customer_updated`` (where to mail)
and for new titles (to name the book); a timer for the due-soon reminders
and one that mails; RPC for the gateway to list a customer's notices.
Outbound: its store (notices, the outbox of mails) and SMTP
(``notification.mail``).

Each notice is recorded once, whatever the redeliveries: its id is made
from what it is about (``notification.domain``), and a second event for the
same step finds it there. A notice is mailed when the customer has an email
and ``SMTP_HOST`` is set; otherwise it is recorded only, which is not an
error. An email that reaches this service after a notice was recorded is
used from the next notice on.
"""
import logging
import time

from nameko.dependency_providers import Config
from nameko.timer import timer

from common.handlers import handles
from common.rpc import rpc
from common.service import ServiceBase
from notification import domain, models
from notification.domain import Customer, Loan
from notification.mail import BATCH, LEASE, MAILS, SENT, REFUSED, Mailer

log = logging.getLogger(__name__)

MAX_LIMIT = 500  # a page is bounded, like every list in the API
TICK = 1.0  # seconds between two sweeps of each timer


class NotificationService(ServiceBase):
    name = "notification"

    # Through its repository (models.Notices): tx.notices in a write, store.notices() to read.
    # serialized: mail leases and timers read many rows (common.store.Store).
    store = models.NotificationStore(models.Base, serialized=True)
    mailer = Mailer()
    config = Config()

    # -- what the gateway asks ----------------------------------------

    @rpc
    def notices(self, customer, before=None, limit=100):
        """The customer's notices, newest first; ``next`` is the cursor of the older ones."""
        limit = max(1, min(int(limit), MAX_LIMIT))
        with self.store.notices() as notices:
            rows = notices.for_customer(customer, before, limit + 1)
            return {"items": [notice.to_dict() for notice in rows[:limit]],
                    "next": rows[limit - 1].seq if len(rows) > limit else None}

    @rpc
    def health(self):
        """ServiceBase's health, and where the mail stands."""
        answer = super().health()
        with self.store.notices() as notices:
            answer["mail"] = {"enabled": self.mailer.enabled, "backlog": notices.mail_backlog()}
        return answer

    # -- what the other services tell us ------------------------------

    @handles("gateway", "customer_updated")
    def on_customer_updated(self, tx, event):
        customer = tx.notices.customer(event["customer"])
        if customer is None:
            customer = Customer(event["customer"])
            tx.notices.add_customer(customer)
        customer.apply(event)

    @handles("product", "book_registered")
    def on_book_registered(self, tx, event):
        tx.notices.save_title(event["book_id"], event["title"])

    @handles("reservation", "reservation_confirmed")
    def on_reservation_confirmed(self, tx, event):
        self._notify(tx, event)

    @handles("reservation", "reservation_shipped")
    def on_reservation_shipped(self, tx, event):
        self._notify(tx, event)

    @handles("reservation", "reservation_delivered")
    def on_reservation_delivered(self, tx, event):
        self._loan(tx, event).due(event.get("due_at"), self._due_soon_seconds())
        self._notify(tx, event)

    @handles("reservation", "reservation_returned")
    def on_reservation_returned(self, tx, event):
        self._loan(tx, event).end()

    @handles("reservation", "reservation_canceled")
    def on_reservation_canceled(self, tx, event):
        self._loan(tx, event).end()
        self._notify(tx, event)  # only when the library canceled it (domain.notice_for)

    @handles("reservation", "loan_renewed")
    def on_loan_renewed(self, tx, event):
        self._loan(tx, event).due(event["due_at"], self._due_soon_seconds())

    @handles("reservation", "loan_overdue")
    def on_loan_overdue(self, tx, event):
        self._loan(tx, event).end()
        self._notify(tx, event)

    # -- timers ---------------------------------------------------------

    @timer(interval=TICK)
    def remind(self):
        """Record the due-soon notices whose moment has come. Every replica's
        timer runs; the loans are read again inside the write, and the
        notice's id is unique, so each reminder is recorded once."""
        now = time.time()
        with self.store.notices() as notices:
            if not notices.loans_to_remind(now, limit=1):
                return
        with self.store.transaction() as tx:
            for loan in tx.notices.loans_to_remind(now):
                notice = loan.reminder(now, tx.notices.title_of(loan.book_id))
                if notice is not None:
                    self._record(tx, notice)

    @timer(interval=TICK)
    def send_mails(self):
        """Mail what the outbox holds that is due (see ``notification.mail``)."""
        if not self.mailer.enabled:
            return
        now = time.time()
        with self.store.notices() as notices:
            if not notices.has_mail_due(now):
                return
        with self.store.transaction() as tx:
            claimed = tx.notices.claim_mails(now, LEASE, BATCH)
        for mail, outcome, error in self.mailer.send(claimed):
            with self.store.transaction() as tx:
                if outcome == SENT:
                    tx.notices.mail_sent(mail["notice_id"], time.time())
                elif outcome == REFUSED:
                    tx.notices.mail_refused(mail["notice_id"], error)
                else:
                    retry_at = time.time() + self.mailer.delay(mail["attempts"] + 1)
                    tx.notices.mail_deferred(mail["notice_id"], retry_at, error)
            MAILS.labels(outcome).inc()
            log_at = logging.INFO if outcome == SENT else logging.WARNING
            log.log(log_at, "mail %s: %s", outcome, error or mail["subject"],
                    extra={"notice_id": mail["notice_id"], "attempts": mail["attempts"] + 1})

    # -- helpers --------------------------------------------------------

    def _due_soon_seconds(self):
        return float(self.config.get("DUE_SOON_SECONDS") or 172800)

    @staticmethod
    def _loan(tx, event):
        loan = tx.notices.loan(event["reservation_id"])
        if loan is None:
            loan = Loan(event["reservation_id"], event["customer"], event["book_id"])
            tx.notices.add_loan(loan)
        return loan

    def _notify(self, tx, event):
        notice = domain.notice_for(event, tx.notices.title_of(event["book_id"]))
        if notice is not None:
            self._record(tx, notice)

    def _record(self, tx, notice):
        """Record a notice once; queue its mail when there is somewhere to send it."""
        if tx.notices.has_notice(notice.id):
            return
        tx.notices.add_notice(notice)
        email = tx.notices.email_of(notice.customer)
        if email and self.mailer.enabled:
            tx.notices.add_mail(notice, email, time.time())
        log.info("notice %s", notice.kind, extra={"reservation_id": notice.reservation_id,
                                                  "notice_id": notice.id, "mailed": bool(email)})
