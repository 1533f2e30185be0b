"""Fault points: where the fault tests make a process crash, stall or wait,
at one exact step of its work. Production never sets them, and then every
point is a no-op (one set lookup).

A test arms points through the environment of the process it starts::

    BOOKRENTAL_FAULT="<point>:<action>[,<point>:<action>...]"

with one of these actions:

- ``crash``: exit at once (status 137), as ``kill -9`` would: no clean-up,
  no reply, nothing more published;
- ``sleep=<seconds>``: stall, as a slow process would;
- ``gate``: do what the file ``$BOOKRENTAL_FAULT_GATES/<point>`` says at
  the moment the point is reached: nothing when there is no such file;
  ``crash`` or ``sleep=<seconds>`` once (the file is removed first);
  ``each <action>`` at every pass, until the file is removed; ``hold``:
  wait while the file exists (at most two minutes), so that a test can
  break something else at exactly that moment (the broker...), then let
  the process go on by removing it. A system started with its points on
  ``gate`` runs normally, and a test steers one step of one request
  without restarting anything.

Each point reached logs ``fault point <name>: <action>`` first, so a test
can wait for it in the service's log. The points in the code:

- ``reservation.cancel.before-delivery``: the cancel intent is committed,
  delivery not asked yet (``reservation.service``);
- ``reservation.cancel.after-delivery``: delivery has answered the cancel,
  the reservation is not canceled yet;
- ``reservation.delivery-canceled.before-apply``: reservation has received
  ``delivery_canceled`` and not applied it yet (inside its transaction:
  a hold there keeps the service's other writers waiting);
- ``delivery.cancel.before-reply``: the delivery's cancel is committed (and
  its event published), the answer not yet sent (``delivery.service``).

(``BOOKRENTAL_FAULT=crash-before-publish``, read by ``common.storeport``, is
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
    if action == "gate":
        action = _open_gate(name)
    if action is None:
        return
    log.error("fault point %s: %s", name, action, extra={"fault_point": name})
    if action == "crash":
        os._exit(137)
    elif action.startswith("sleep="):
        eventlet.sleep(float(action.split("=", 1)[1]))
    elif action == "hold":
        gate = _gate(name)
        until = time.monotonic() + HOLD_AT_MOST
        while os.path.exists(gate) and time.monotonic() < until:
            eventlet.sleep(0.05)
        log.error("fault point %s: released", name, extra={"fault_point": name})
    else:
        raise ValueError(f"unknown fault action {action!r} for {name}")


def _gate(name):
    return os.path.join(os.environ.get("BOOKRENTAL_FAULT_GATES", ""), name)


def _open_gate(name):
    """The action the point's gate file asks for, or None (no file)."""
    path = _gate(name)
    try:
        with open(path) as handle:
            action = handle.read().strip()
    except FileNotFoundError:
        return None
    if action.startswith("each "):
        return action[len("each "):]
    if action != "hold":
        try:
            os.unlink(path)  # once
        except FileNotFoundError:
            return None  # another worker took it
    return action


def arm(gates, name, action):
    """For a test: make the next pass through ``name`` (armed with ``gate``)
    do ``action``; the file ``hold`` waits on is the one returned."""
    os.makedirs(gates, exist_ok=True)
    path = os.path.join(gates, name)
    with open(path + ".tmp", "w") as handle:
        handle.write(action)
    os.replace(path + ".tmp", path)
    return path
