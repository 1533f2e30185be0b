"""Fault points: where the fault tests make a process crash, stall or wait,
at one exact step of its work. Production never sets them, and then every
point is a no-op (one set lookup).

A test arms points through the environment of the process it starts::

    BOOKRENTAL_FAULT="<point>:<action>[,<point>:<action>...]"

with one of these actions:

- ``crash``: exit at once (status 137), as ``kill -9`` would: no clean-up,
  no reply, nothing published;
- ``sleep=<seconds>``: stall, as a slow process would;
- ``hold``: wait while the file named by ``BOOKRENTAL_FAULT_GATE`` exists
  (at most two minutes), so that a test can break something else (the
  broker...) at exactly that moment, then let the process go on.

Each point reached logs ``fault point <name>: <action>`` first, so a test
can wait for it in the service's log. The points in the code:

- ``reservation.cancel.after-delivery``: delivery has answered the cancel,
  the reservation is not canceled yet (``reservation.service``);
- ``delivery.cancel.before-reply``: the delivery's cancel is committed (and
  its event published), the answer not yet sent (``delivery.service``).

(``BOOKRENTAL_FAULT=crash-before-publish``, read by ``common.store``, is
the older form of one more: exit between a commit and its publish.)
"""
import logging
import os
import time

import eventlet

log = logging.getLogger(__name__)

HOLD_AT_MOST = 120.0  # seconds a held point waits for its gate before going on


def _parse(value):
    armed = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        point, _, action = item.partition(":")
        if action:
            armed[point] = action
    return armed


ARMED = _parse(os.environ.get("BOOKRENTAL_FAULT", ""))


def point(name):
    """A fault point: does what the environment armed it to do, else nothing."""
    action = ARMED.get(name)
    if action is None:
        return
    log.error("fault point %s: %s", name, action, extra={"fault_point": name})
    if action == "crash":
        os._exit(137)
    elif action.startswith("sleep="):
        eventlet.sleep(float(action.split("=", 1)[1]))
    elif action == "hold":
        gate = os.environ.get("BOOKRENTAL_FAULT_GATE", "")
        until = time.monotonic() + HOLD_AT_MOST
        while gate and os.path.exists(gate) and time.monotonic() < until:
            eventlet.sleep(0.05)
        log.error("fault point %s: released", name, extra={"fault_point": name})
    else:
        raise ValueError(f"unknown fault action {action!r} for {name}")
