"""How the mailer reads what an SMTP server answers (notification.mail):
accepted is sent, "later" and unreachable are deferred, a refusal for good
is refused, and a connection that breaks defers what was not sent yet."""
import smtplib

import pytest

from notification import mail as mail_module
from notification.mail import DEFERRED, REFUSED, SENT, Mailer


def mailer(**config):
    instance = Mailer()
    instance.container = type("Container", (), {"config": {"SMTP_HOST": "mail.test", "SMTP_PORT": 2525, **config}})()
    instance.setup()
    return instance


def outbox(n=3):
    return [{"notice_id": f"n-{i}", "recipient": f"r{i}@example.org", "subject": f"subject {i}", "body": "body",
             "sent_at": "2024-05-01T10:00:00.000000+00:00", "attempts": 0} for i in range(n)]


class FakeSMTP:
    """smtplib.SMTP answering each message with what ``answers`` says, in turn."""

    answers = []
    sent = []

    def __init__(self, host, port, timeout, local_hostname):
        assert (host, port) == ("mail.test", 2525)

    def send_message(self, message):
        answer = FakeSMTP.answers.pop(0)
        if answer is not None:
            raise answer
        FakeSMTP.sent.append(message)

    def quit(self):
        pass


@pytest.fixture
def smtp(monkeypatch):
    FakeSMTP.answers, FakeSMTP.sent = [], []
    monkeypatch.setattr(mail_module.smtplib, "SMTP", FakeSMTP)
    return FakeSMTP


def outcomes(mailer_, mails):
    return [(mail["notice_id"], outcome) for mail, outcome, _ in mailer_.send(mails)]


def test_each_answer_is_read_as_sent_deferred_or_refused(smtp):
    smtp.answers = [None, smtplib.SMTPRecipientsRefused({"r1@example.org": (550, b"no such user")}),
                    smtplib.SMTPDataError(451, b"try again later")]
    assert outcomes(mailer(), outbox()) == [("n-0", SENT), ("n-1", REFUSED), ("n-2", DEFERRED)]


def test_a_broken_connection_or_a_refused_sender_defers_every_mail_not_yet_sent(smtp):
    smtp.answers = [None, smtplib.SMTPServerDisconnected("gone")]
    assert outcomes(mailer(), outbox()) == [("n-0", SENT), ("n-1", DEFERRED), ("n-2", DEFERRED)]
    smtp.answers = [smtplib.SMTPSenderRefused(550, b"bad sender", "library@bookrental.example")]
    assert outcomes(mailer(), outbox(2)) == [("n-0", DEFERRED), ("n-1", DEFERRED)]


def test_an_unreachable_server_defers_them_all(monkeypatch):
    def refuse(*args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(mail_module.smtplib, "SMTP", refuse)
    assert outcomes(mailer(), outbox(2)) == [("n-0", DEFERRED), ("n-1", DEFERRED)]


def test_the_message_carries_a_stable_message_id_and_the_notice(smtp):
    smtp.answers = [None]
    outcomes(mailer(SMTP_FROM="Library <desk@library.example>"), outbox(1))
    message = smtp.sent[0]
    assert message["Message-ID"] == "<n-0@library.example>"
    assert (message["From"], message["To"], message["Subject"]) == (
        "Library <desk@library.example>", "r0@example.org", "subject 0")
    assert message["Date"] == "Wed, 01 May 2024 10:00:00 +0000"


def test_retries_back_off_up_to_the_setting():
    waits = [mailer(SMTP_RETRY_MAX_SECONDS=30).delay(attempts) for attempts in range(1, 8)]
    assert waits == [1, 2, 4, 8, 16, 30, 30]


def test_no_smtp_host_means_no_mailing():
    assert not mailer(SMTP_HOST="").enabled
    assert mailer().enabled
