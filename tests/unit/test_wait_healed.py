"""``Cluster.wait_healed``: after a kill -9, wait for the supervisor's new
process before asking whether it consumes. Right after the kill the old
process reads as exited (supervisord has not spawned the next one yet), and
``wait_consuming`` takes an exited process for a failed start (the soak
reported 6 of 39 healed kills as "did not come back")."""
import types

import pytest

from ops.run import Cluster, StartFailed


class Supervised:
    """What wait_healed reads of a cluster: pids as the supervisor shows
    them over time, and whether anyone asked for consumers too early."""

    def __init__(self, pids_seen):
        self.pids_seen = list(pids_seen)
        self.layout = types.SimpleNamespace(log="var/log")
        self.consuming_asked = None

    def pids(self, service):
        return self.pids_seen.pop(0) if len(self.pids_seen) > 1 else self.pids_seen[0]

    def wait_consuming(self, service, replicas, timeout):
        if self.pids(service).get(1) in (None, 100):
            raise StartFailed("product-1 exited while starting (EXITED)")
        self.consuming_asked = (service, replicas)


def test_it_waits_for_the_new_process_before_asking_it_to_consume():
    # the old pid still listed, then none (exited, not yet spawned), then the new one
    cluster = Supervised([{1: 100}, {}, {}, {1: 200}])
    Cluster.wait_healed(cluster, "product", {1: 100}, timeout=5)
    assert cluster.consuming_asked == ("product", 1)


def test_a_process_never_started_again_is_reported_with_where_to_look():
    cluster = Supervised([{}])
    with pytest.raises(StartFailed, match="not started again.*var/log"):
        Cluster.wait_healed(cluster, "product", {1: 100}, timeout=0.2)
    assert cluster.consuming_asked is None
