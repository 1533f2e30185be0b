"""A broker restart in the middle of a burst loses nothing: queues are
durable and messages persistent, the services and the gateway reconnect by
themselves, and every reservation accepted (202) before, during or after
the outage settles. Requests during the outage may be refused with 503.

It restarts the one local RabbitMQ node, which every vhost on this machine
shares: other test runs see the outage too. BOOKRENTAL_NO_BROKER_RESTART=1
skips it, for a machine where others are running tests on the same broker."""
import os
import shutil
import subprocess
import time

import pytest

from chaos import Burst, new_customer, parked, settle
from helpers import BROKER

pytestmark = pytest.mark.e2e


def restart_broker(down_for=3):
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)
    time.sleep(down_for)
    subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
    subprocess.run(["rabbitmqctl", "await_startup"], check=True, capture_output=True, timeout=120)


@pytest.fixture
def local_broker():
    host, port = BROKER.rsplit(":", 1)
    if os.environ.get("BOOKRENTAL_NO_BROKER_RESTART"):
        pytest.skip("BOOKRENTAL_NO_BROKER_RESTART is set (others share this broker)")
    if shutil.which("rabbitmqctl") is None or host not in ("127.0.0.1", "localhost"):
        pytest.skip("needs the local RabbitMQ node and rabbitmqctl")
    if subprocess.run(["rabbitmqctl", "status"], capture_output=True, timeout=60).returncode != 0:
        pytest.skip("rabbitmqctl cannot reach the local node")
    return host, port


def test_a_broker_restart_in_the_middle_of_a_burst(system, library, local_broker):
    customer = new_customer(library)
    book = library.new_book(copies=40)
    # Paced, so that requests keep coming before, during and after the outage.
    burst = Burst(customer, book["id"], count=36, threads=4, retries=8, pause=0.4).start()
    burst.wait_done(6)
    restart_broker()
    burst.join(timeout=240)  # fails on any answer but 202, 503 (or 429)

    accepted = set(burst.accepted)
    assert len(accepted) >= 6, burst.attempts
    settle(system, library, [book["id"]], accepted, {customer.username: customer}, timeout=90)
    assert parked(system.amqp_uri) == {}

    # And the system works as before: a new reservation goes all the way.
    later = library.reserve(customer, book["id"])
    library.wait_status(later["id"], "confirmed")
    library.delivery_for(later["id"])
    print("broker restart:", dict(burst.attempts), "gave up:", burst.gave_up)
