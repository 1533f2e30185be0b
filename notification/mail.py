"""Mailing notices over SMTP: the notification service's outbound adapter.

A notice for a customer with an email is written, in the transaction that
records the notice, to the ``mails`` table: an outbox of mails. A sweep (a
Nameko timer, every second, in every replica) claims the mails that are due,
sends them over one SMTP connection, and marks each one the moment the
server has taken it. A mail server that is down, or answers "try later"
(4xx), delays the mail: it stays in the outbox and is tried again after 1, 2,
4... seconds, at most ``SMTP_RETRY_MAX_SECONDS`` apart, however long that
takes. A server that refuses it for good (5xx: no such mailbox, say) has it
marked ``refused`` with the reason, and it is not tried again.

Sent once: a replica claims a mail for a lease (``LEASE`` seconds) with a
conditional update of its row, so two replicas never send the same mail
at the same time; the mark is written right after the server accepts it.

What a crash can still do, honestly: if a process dies *after* the SMTP
server accepted a mail and *before* the mark is committed (a window of one
local database write), the mail is still ``pending``; once its lease has
expired it is sent again, so the customer gets it twice. That is the one
way to avoid ever losing it (the other choice, marking before sending,
loses the mail on the same crash). It is bounded: it takes a crash inside
that window, it concerns at most the one mail being marked, and the copy
carries the same ``Message-ID`` (``<notice id@domain>``), by which mail
clients and servers that deduplicate recognise it as the same message.
"""
import logging
import smtplib
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from nameko.extensions import DependencyProvider
from prometheus_client import Counter

from notification.domain import parse_time

log = logging.getLogger(__name__)

LEASE = 120.0  # seconds a replica has to send a mail it claimed before another may
BATCH = 20  # mails claimed per sweep
DEFAULT_FROM = "Book Rental <library@bookrental.example>"

MAILS = Counter("bookrental_mails", "Notice mails, by outcome: sent, deferred (retried later), refused.",
                ["outcome"])

SENT, DEFERRED, REFUSED = "sent", "deferred", "refused"


class Mailer(DependencyProvider):
    """SMTP, as configured: ``SMTP_HOST`` (empty: mailing is off),
    ``SMTP_PORT``, ``SMTP_FROM``, ``SMTP_TIMEOUT``, ``SMTP_RETRY_MAX_SECONDS``."""

    def setup(self):
        config = self.container.config
        self.host = str(config.get("SMTP_HOST") or "").strip()
        self.port = int(config.get("SMTP_PORT") or 25)
        self.sender = str(config.get("SMTP_FROM") or DEFAULT_FROM)
        self.timeout = float(config.get("SMTP_TIMEOUT") or 10)
        self.retry_max = float(config.get("SMTP_RETRY_MAX_SECONDS") or 300)
        self.domain = parseaddr(self.sender)[1].rpartition("@")[2] or "bookrental.example"
        if self.enabled:
            log.info("notices are mailed through %s:%d", self.host, self.port)
        else:
            log.info("SMTP_HOST is not set: notices are recorded, not mailed")

    def get_dependency(self, worker_ctx):
        return self

    @property
    def enabled(self):
        return bool(self.host)

    def delay(self, attempts):
        """Seconds before the next try of a mail tried ``attempts`` times."""
        return min(2.0 ** max(attempts - 1, 0), self.retry_max)

    def message(self, mail):
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = mail["recipient"]
        message["Subject"] = mail["subject"]
        message["Date"] = format_datetime(parse_time(mail["sent_at"]))
        message["Message-ID"] = f"<{mail['notice_id']}@{self.domain}>"
        message.set_content(mail["body"] + "\n\n-- \nBook Rental: books lent and delivered to your door.\n")
        return message

    def send(self, mails):
        """Send ``mails`` (rows of the outbox) over one connection; yields
        (mail, outcome, error) for each, as soon as it is known. If the
        server cannot be reached, every mail is deferred."""
        try:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout, local_hostname="bookrental")
        except (OSError, smtplib.SMTPException) as error:
            reason = f"cannot reach {self.host}:{self.port}: {_describe(error)}"
            for mail in mails:
                yield mail, DEFERRED, reason
            return
        try:
            for index, mail in enumerate(mails):
                try:
                    smtp.send_message(self.message(mail))
                except smtplib.SMTPSenderRefused as error:  # our SMTP_FROM: every mail waits until it is fixed
                    for rest in mails[index:]:
                        yield rest, DEFERRED, _describe(error)
                    return
                except smtplib.SMTPRecipientsRefused as error:
                    codes = [code for code, _ in error.recipients.values()]
                    yield mail, (REFUSED if codes and min(codes) >= 500 else DEFERRED), _describe(error)
                except smtplib.SMTPResponseException as error:
                    yield mail, (REFUSED if error.smtp_code >= 500 else DEFERRED), _describe(error)
                except (smtplib.SMTPNotSupportedError, ValueError) as error:
                    # e.g. a non-ASCII address to a server without SMTPUTF8: no retry will help
                    yield mail, REFUSED, _describe(error)
                except (OSError, smtplib.SMTPException) as error:  # the connection broke: the rest waits too
                    for rest in mails[index:]:
                        yield rest, DEFERRED, _describe(error)
                    return
                else:
                    yield mail, SENT, None
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()


def _describe(error):
    return f"{type(error).__name__}: {error}"[:500]
