"""A RabbitMQ node of a test's own, for the tests that must stop a broker.

The machine's RabbitMQ (127.0.0.1:5672) is shared by every test run on it;
a test that restarts a broker must never restart that one. ``RabbitNode``
starts another node beside it, from the same installation: its own node
name, AMQP and distribution ports (free ones), database, logs, config,
plugins (none: no management listener to collide with the shared one's)
and Erlang cookie (its own HOME), listening on 127.0.0.1 only. Nothing is
read from /etc/rabbitmq.

    with private_node(tmp_path) as node:
        node.amqp_uri            # pyamqp://guest:guest@127.0.0.1:<port>//
        node.restart(down_for=2) # stop_app, wait, start_app: the outage
    # stopped, and its directory removed

``rabbitmqctl`` runs against the node with its cookie; a cluster of several
nodes (SPEC §12) can be made from nodes sharing ``cookie`` and
``node.rabbitmqctl("join_cluster", other.name)`` between stop_app/start_app.
"""
import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid

RABBITMQ_BIN = os.environ.get("RABBITMQ_BIN", "/usr/lib/rabbitmq/bin")


def available():
    """Why a private node cannot be started here, or None when it can."""
    if not os.path.exists(os.path.join(RABBITMQ_BIN, "rabbitmq-server")):
        return f"no RabbitMQ installation at {RABBITMQ_BIN}"
    return None


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RabbitNode:
    """One RabbitMQ node under ``base_dir``; ``start()``, ``stop()``."""

    def __init__(self, base_dir, name=None, port=None, dist_port=None, cookie=None):
        self.short_name = name or f"bookrental-test-{uuid.uuid4().hex[:8]}"
        self.name = f"{self.short_name}@localhost"
        self.base_dir = os.path.abspath(str(base_dir))
        self.port = port or _free_port()
        self.dist_port = dist_port or _free_port()
        self.cookie = cookie or uuid.uuid4().hex.upper()
        self.home = os.path.join(self.base_dir, "home")
        self.log_dir = os.path.join(self.base_dir, "log")

    @property
    def amqp_uri(self):
        return f"pyamqp://guest:guest@127.0.0.1:{self.port}//"

    def env(self):
        """The environment every rabbitmq command for this node runs with."""
        env = {key: value for key, value in os.environ.items() if not key.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": self.home,  # its .erlang.cookie
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": os.path.join(self.base_dir, "mnesia"),
            "RABBITMQ_LOG_BASE": self.log_dir,
            "RABBITMQ_PID_FILE": os.path.join(self.base_dir, "node.pid"),
            "RABBITMQ_CONFIG_FILE": os.path.join(self.base_dir, "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(self.base_dir, "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": os.path.join(self.base_dir, "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self.base_dir, "enabled_plugins"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        })
        return env

    def _write_files(self):
        os.makedirs(self.home, exist_ok=True)
        os.makedirs(self.log_dir, exist_ok=True)
        cookie = os.path.join(self.home, ".erlang.cookie")
        with open(cookie, "w") as handle:
            handle.write(self.cookie)
        os.chmod(cookie, 0o400)
        files = {
            "rabbitmq.conf": f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
                             "loopback_users.guest = true\n"
                             "vm_memory_high_watermark.relative = 0.2\n"
                             "disk_free_limit.absolute = 50MB\n",
            "advanced.config": "[].\n",
            "rabbitmq-env.conf": "",
            "enabled_plugins": "[].\n",
        }
        for name, text in files.items():
            with open(os.path.join(self.base_dir, name), "w") as handle:
                handle.write(text)

    def rabbitmqctl(self, *args, timeout=120, check=True):
        return subprocess.run([os.path.join(RABBITMQ_BIN, "rabbitmqctl"), "-n", self.name, *args],
                              env=self.env(), capture_output=True, text=True, timeout=timeout, check=check)

    def start(self, timeout=120):
        """Start the node (detached) and return once it accepts AMQP."""
        self._write_files()
        subprocess.run([os.path.join(RABBITMQ_BIN, "rabbitmq-server"), "-detached"],
                       env=self.env(), capture_output=True, timeout=60, check=True)
        self.await_startup(timeout)
        return self

    def await_startup(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            done = self.rabbitmqctl("await_startup", "--timeout", "10", check=False, timeout=30)
            if done.returncode == 0 and self.accepts_amqp():
                return
            time.sleep(0.5)
        raise TimeoutError(f"RabbitMQ node {self.name} did not start within {timeout}s; logs in {self.log_dir}")

    def accepts_amqp(self):
        from kombu import Connection

        try:
            with Connection(self.amqp_uri, connect_timeout=2) as connection:
                connection.connect()
                return True
        except Exception:
            return False

    def stop_app(self):
        self.rabbitmqctl("stop_app")

    def start_app(self, timeout=120):
        self.rabbitmqctl("start_app")
        self.await_startup(timeout)

    def restart(self, down_for=2.0):
        """An outage of the broker (not of the Erlang node): every connection
        is cut, queues and persistent messages survive."""
        self.stop_app()
        time.sleep(down_for)
        self.start_app()

    def stop(self):
        """Stop the node; kill it if it will not stop."""
        stopped = self.rabbitmqctl("stop", check=False, timeout=60)
        if stopped.returncode != 0:
            try:
                with open(os.path.join(self.base_dir, "node.pid")) as handle:
                    os.kill(int(handle.read().strip()), 9)
            except (OSError, ValueError):
                pass


@contextlib.contextmanager
def private_node(base_dir, **kwargs):
    """A started ``RabbitNode``; stopped and its directory removed afterwards."""
    node = RabbitNode(base_dir, **kwargs)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        shutil.rmtree(node.base_dir, ignore_errors=True)
