"""The fault points (common/faults.py): a no-op unless armed; a gate does
what its file says, once, or holds while the file is there."""
import os
import threading
import time

import pytest

from common import faults


@pytest.fixture
def gates(tmp_path, monkeypatch):
    monkeypatch.setenv("BOOKRENTAL_FAULT_GATES", str(tmp_path))
    monkeypatch.setattr(faults, "ARMED", faults._parse("a.point:gate,b.point:sleep=0.01"))
    return str(tmp_path)


def test_the_environment_arms_points_by_name():
    assert faults._parse("") == {}
    assert faults._parse("x.y:crash, z:sleep=2,,w:gate") == {"x.y": "crash", "z": "sleep=2", "w": "gate"}


def test_an_unarmed_point_and_a_closed_gate_do_nothing(gates):
    faults.point("not.armed")
    faults.point("a.point")  # no file: nothing


def test_a_gate_acts_once(gates, monkeypatch):
    exits = []
    monkeypatch.setattr(faults.os, "_exit", exits.append)
    faults.arm(gates, "a.point", "crash")

    faults.point("a.point")
    faults.point("a.point")
    assert exits == [137]


def test_a_held_gate_waits_until_its_file_is_removed(gates):
    path = faults.arm(gates, "a.point", "hold")
    passed = threading.Event()
    worker = threading.Thread(target=lambda: (faults.point("a.point"), passed.set()))
    worker.start()
    time.sleep(0.3)
    assert not passed.is_set()
    os.unlink(path)
    assert passed.wait(5)
    worker.join()


def test_sleep_stalls(gates):
    began = time.monotonic()
    faults.point("b.point")
    assert time.monotonic() - began >= 0.01


def test_each_acts_at_every_pass_until_the_file_goes(gates, monkeypatch):
    exits = []
    monkeypatch.setattr(faults.os, "_exit", exits.append)
    path = faults.arm(gates, "a.point", "each crash")

    faults.point("a.point")
    faults.point("a.point")
    os.unlink(path)
    faults.point("a.point")
    assert exits == [137, 137]
