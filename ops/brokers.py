"""RabbitMQ nodes of this system's own, and a cluster of them (SPEC §12).

``make up CLUSTER=3`` runs three nodes beside the machine's broker (which it
never touches), from the same installation: each with its own node name
(``bookrental-1@localhost``...), AMQP port (5701, 5702, 5703) and
management port (15701...), distribution port (25701...), database and logs
under the state directory (``<state>/brokers/node-<n>/``), and one Erlang
cookie shared by the three (their HOME is ``<state>/brokers/home``). Nothing
is read from /etc/rabbitmq. They listen on 127.0.0.1 only.

The nodes run as this user (root) through ``/usr/lib/rabbitmq/bin`` (the
``/usr/sbin`` wrappers switch to the rabbitmq user, who cannot write here).
Nodes 2 and 3 join node 1 with ``rabbitmqctl join_cluster`` the first time;
afterwards a node started again rejoins the cluster by itself.

    brokers = Brokers(state_dir, size=3)
    brokers.up()            # started (those not running) and clustered
    brokers.amqp_uris       # one per node, for kombu's failover list
    brokers.stop(2); brokers.start(2)
    brokers.down()          # every node stopped (their data kept): [(name, pid)]

Tests make nodes of their own with ``Brokers(..., name="bookrental-test-x",
ports=None)`` (free ports) so that they never meet a user's ``make up``.
"""
import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid

RABBITMQ_BIN = os.environ.get("RABBITMQ_BIN", "/usr/lib/rabbitmq/bin")
AMQP_PORT = 5700  # node n listens on AMQP_PORT + n ...
MANAGEMENT_PORT = 15700  # ... its management console on MANAGEMENT_PORT + n
DIST_PORT = 25700  # ... and talks to the other nodes on DIST_PORT + n


def available():
    """Why nodes cannot be started here, or None when they can."""
    if not os.path.exists(os.path.join(RABBITMQ_BIN, "rabbitmq-server")):
        return f"no RabbitMQ installation at {RABBITMQ_BIN}"
    return None


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class Node:
    """One RabbitMQ node under ``base_dir``; ``start()``, ``stop()``.

    ``management_port`` None: no plugin at all (a lighter node, for tests)."""

    def __init__(self, base_dir, name=None, port=None, dist_port=None, cookie=None, management_port=None,
                 home=None):
        self.short_name = name or f"bookrental-test-{uuid.uuid4().hex[:8]}"
        self.name = f"{self.short_name}@localhost"
        self.base_dir = os.path.abspath(str(base_dir))
        self.port = port or free_port()
        self.dist_port = dist_port or free_port()
        self.management_port = management_port
        self.cookie = cookie or uuid.uuid4().hex.upper()
        self.home = home or os.path.join(self.base_dir, "home")
        self.log_dir = os.path.join(self.base_dir, "log")
        self.pid_file = os.path.join(self.base_dir, "node.pid")
        self.mnesia = os.path.join(self.base_dir, "mnesia")

    @property
    def amqp_uri(self):
        return f"pyamqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def management_url(self):
        return f"http://127.0.0.1:{self.management_port}" if self.management_port else None

    def env(self):
        """The environment every rabbitmq command for this node runs with."""
        env = {key: value for key, value in os.environ.items() if not key.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": self.home,  # its .erlang.cookie
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": self.mnesia,
            "RABBITMQ_LOG_BASE": self.log_dir,
            "RABBITMQ_PID_FILE": self.pid_file,
            "RABBITMQ_CONFIG_FILE": os.path.join(self.base_dir, "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(self.base_dir, "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": os.path.join(self.base_dir, "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self.base_dir, "enabled_plugins"),
            "ERL_CRASH_DUMP": os.path.join(self.base_dir, "erl_crash.dump"),  # not in the caller's directory
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        })
        return env

    def _write_files(self):
        os.makedirs(self.home, exist_ok=True)
        os.makedirs(self.log_dir, exist_ok=True)
        cookie = os.path.join(self.home, ".erlang.cookie")
        if not os.path.exists(cookie):
            with open(cookie, "w") as handle:
                handle.write(self.cookie)
            os.chmod(cookie, 0o400)
        conf = (f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
                "loopback_users.guest = true\n"
                "vm_memory_high_watermark.relative = 0.2\n"
                "disk_free_limit.absolute = 50MB\n")
        plugins = "[]."
        if self.management_port:
            conf += f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"
            plugins = "[rabbitmq_management]."
        files = {"rabbitmq.conf": conf, "advanced.config": "[].\n", "rabbitmq-env.conf": "",
                 "enabled_plugins": plugins + "\n"}
        for name, text in files.items():
            with open(os.path.join(self.base_dir, name), "w") as handle:
                handle.write(text)

    def rabbitmqctl(self, *args, timeout=120, check=True):
        os.makedirs(self.home, exist_ok=True)  # the CLI's Erlang VM needs a HOME for its cookie
        return subprocess.run([os.path.join(RABBITMQ_BIN, "rabbitmqctl"), "-n", self.name, *args],
                              env=self.env(), capture_output=True, text=True, timeout=timeout, check=check,
                              cwd=self.home)

    def running(self):
        """True when the node (Erlang VM and RabbitMQ) answers."""
        return self.rabbitmqctl("ping", check=False, timeout=30).returncode == 0

    def start(self, timeout=120):
        """Start the node (detached) and return once it accepts AMQP."""
        self._write_files()
        subprocess.run([os.path.join(RABBITMQ_BIN, "rabbitmq-server"), "-detached"],
                       env=self.env(), capture_output=True, timeout=60, check=True, cwd=self.home)
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

    def pids(self):
        """The node's Erlang VM(s), found by the database directory in their
        environment (pid file or not)."""
        wanted = f"RABBITMQ_MNESIA_BASE={self.mnesia}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    program = os.path.basename(handle.read().split(b"\0")[0])
                if program != b"beam.smp":
                    continue
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    if wanted in handle.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
        return found

    def stop(self, timeout=60):
        """Stop the node (gracefully: its connections are closed); kill it if it will not stop."""
        if self.rabbitmqctl("stop", check=False, timeout=timeout).returncode == 0:
            return
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Brokers:
    """``size`` nodes under ``<state_dir>/brokers``, clustered."""

    def __init__(self, state_dir, size=3, name="bookrental", ports=(AMQP_PORT, MANAGEMENT_PORT, DIST_PORT),
                 management=True):
        self.base_dir = os.path.join(os.path.abspath(str(state_dir)), "brokers")
        self.size = size
        home = os.path.join(self.base_dir, "home")
        cookie = _cookie(home)
        self.nodes = []
        for n in range(1, size + 1):
            amqp, mgmt, dist = ((base + n) for base in ports) if ports else (None, None, None)
            if not ports and management:
                mgmt = free_port()
            self.nodes.append(Node(os.path.join(self.base_dir, f"node-{n}"), name=f"{name}-{n}", port=amqp,
                                   dist_port=dist, cookie=cookie, home=home,
                                   management_port=mgmt if management else None))

    def describe(self):
        """What ``described`` needs to make these nodes again (kept in a file)."""
        return [{"name": node.short_name, "port": node.port, "dist_port": node.dist_port,
                 "management_port": node.management_port} for node in self.nodes]

    @classmethod
    def described(cls, state_dir, nodes):
        brokers = cls.__new__(cls)
        brokers.base_dir = os.path.join(os.path.abspath(str(state_dir)), "brokers")
        brokers.size = len(nodes)
        home = os.path.join(brokers.base_dir, "home")
        cookie = _cookie(home)
        brokers.nodes = [Node(os.path.join(brokers.base_dir, f"node-{n}"), cookie=cookie, home=home, **node)
                         for n, node in enumerate(nodes, 1)]
        return brokers

    def node(self, n):
        if not 1 <= int(n) <= self.size:
            raise ValueError(f"no node {n}: the nodes are 1 to {self.size}")
        return self.nodes[int(n) - 1]

    @property
    def amqp_uris(self):
        return [node.amqp_uri for node in self.nodes]

    def amqp_uri(self, first=1):
        """Every node, in kombu's failover form (``;`` between them), starting
        with node ``first``: a client connects to the first that answers, and
        to the next one when its node goes."""
        uris = self.amqp_uris
        start = (first - 1) % len(uris)
        return ";".join(uris[start:] + uris[:start])

    def up(self, timeout=180):
        """Start the nodes that do not run (side by side: a node that was
        clustered waits at start for the others), then join each to node 1
        unless it is already in its cluster."""
        self.nodes[0]._write_files()  # the cookie, before the nodes race to write it
        with concurrent.futures.ThreadPoolExecutor(self.size) as pool:
            list(pool.map(lambda node: node.running() or node.start(timeout), self.nodes))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            if first.name not in self.running_nodes(node):
                node.stop_app()
                node.rabbitmqctl("reset")
                node.rabbitmqctl("join_cluster", first.name)
                node.start_app(timeout)
        return self

    @staticmethod
    def running_nodes(node):
        answer = node.rabbitmqctl("cluster_status", "--formatter", "json", check=False, timeout=60)
        try:
            return json.loads(answer.stdout).get("running_nodes", [])
        except ValueError:
            return []

    def status(self):
        """[(node, its Erlang VM runs?)] for each node (quick: no rabbitmqctl)."""
        return [(node, bool(node.pids())) for node in self.nodes]

    def start(self, n, timeout=180):
        node = self.node(n)
        if not node.running():
            node.start(timeout)
        return node

    def stop(self, n):
        node = self.node(n)
        node.stop()
        return node

    def down(self):
        """Stop every node; [(name, pid)] of those that ran."""
        stopped = []
        for node in reversed(self.nodes):
            pids = node.pids()
            if pids or node.running():
                node.stop()
                stopped.append((node.name, pids[0] if pids else "?"))
        return stopped

    def remove(self):
        """Forget the nodes' data (once they are down)."""
        shutil.rmtree(self.base_dir, ignore_errors=True)


def _cookie(home):
    """The cluster's Erlang cookie: made once, kept in its HOME."""
    path = os.path.join(home, ".erlang.cookie")
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return uuid.uuid4().hex.upper()
