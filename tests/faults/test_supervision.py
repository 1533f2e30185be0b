"""The supervised local run heals what dies (SPEC §11), with nobody calling
``start``: a process killed with ``kill -9`` is started again within 5
seconds and consumes again; one that hangs (``kill -STOP``) fails its
liveness checks, and is killed and started again; one stopped on purpose
(``make stop``) stays stopped. Each while reservations arrive, and each
checked by the audit: the invariant, no duplicate delivery, MyPage agrees."""
import os
import time

import pytest

from chaos import Burst, all_published, new_customer, parked, settle
from helpers import eventually
from ops.run import SERVICES

pytestmark = pytest.mark.e2e

HEALED_WITHIN = 5  # seconds, SPEC §11


def new_pid(system, service, old):
    """The pid of ``service``'s replica 1 once it is another process than ``old``."""
    pid = system.pids(service).get(1)
    return pid if pid and pid != old else None


def burst_then_audit(system, library, fault):
    """A burst of reservations from a careful client, ``fault`` in its middle;
    every one accepted, and the audit clean once the system is quiet."""
    customer = new_customer(library)
    book = library.new_book(copies=8)
    # Retries (with the same Idempotency-Key) outlast a restart of the gateway.
    burst = Burst(customer, book["id"], count=24, retries=12).start()
    burst.wait_done(6)
    result = fault()
    burst.join()
    assert burst.gave_up == 0, burst.attempts
    assert len(set(burst.accepted)) == 24
    settle(system, library, [book["id"]], burst.accepted, {customer.username: customer})
    assert parked(system.amqp_uri) == {}
    return result


@pytest.mark.parametrize("victim", list(SERVICES))
def test_kill_9_is_healed_by_the_supervisor_and_nothing_is_lost(system, library, victim):
    def crash():
        old = system.kill(victim)[1]  # returns once it has exited
        exited = time.monotonic()
        pid = eventually(lambda: new_pid(system, victim, old), timeout=30, interval=0.05,
                         message=f"{victim} started again")
        restarted_after = time.monotonic() - exited
        system.wait_healed(victim, {1: old}, timeout=90)  # nobody calls start: the supervisor did
        return pid, restarted_after

    pid, restarted_after = burst_then_audit(system, library, crash)
    assert restarted_after <= HEALED_WITHIN, f"{victim} was started again after {restarted_after:.1f}s"
    assert system.pids(victim) == {1: pid}
    if victim != "gateway":
        all_published(system.amqp_uri, victim)
    row = next(r for r in system.status() if r["service"] == victim)
    assert row["restarts"] >= 1 and row["state"] in ("STARTING", "RUNNING"), row


def test_a_hung_backend_fails_its_liveness_checks_and_is_started_again(system, library):
    victim = "product"

    def hang():
        old = system.hang(victim)[1]  # SIGSTOP: there, holding its messages, doing nothing
        pid = eventually(lambda: new_pid(system, victim, old), timeout=90, interval=0.2,
                         message=f"{victim} killed and started again")
        system.wait_consuming(victim, 1, timeout=90)
        return old, pid

    old, pid = burst_then_audit(system, library, hang)
    with open(os.path.join(system.state_dir, "log", "liveness.log")) as handle:
        said = handle.read()
    assert f"{victim}-1 (pid {old}) failed its liveness check 3 times in a row" in said, said
    with open(system.logfile(victim)) as handle:  # and the service's own log says so too
        assert f"(pid {old}) failed its liveness check" in handle.read()
    assert system.pids(victim) == {1: pid}


def test_a_service_stopped_on_purpose_stays_stopped(system, library):
    system.stop("mypage")
    try:
        # Longer than a liveness period and a restart: absence takes waiting.
        time.sleep(8)
        assert system.pids("mypage") == {}
        assert [r for r in system.status() if r["service"] == "mypage"] == []
        assert system.consumers("mypage") == 0
    finally:
        system.start("mypage")
    assert system.consumers("mypage") == 1
