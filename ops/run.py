"""Start and stop the services as local processes: ``make up/down/start/stop``.

Each replica is one ``nameko run`` process with a pid file in ``var/run`` and
a log in ``var/log``. ``start`` returns once every replica is consuming (the
broker counts its consumers on the service's RPC queue; the gateway answers
HTTP); ``stop`` returns once every replica has exited (SIGTERM lets Nameko
finish the work in hand; SIGKILL after a grace period).

``rollout`` replaces the replicas of a service one at a time: a new process
starts beside the old one, and the old one is stopped (gracefully) only once
the new one consumes, or for the gateway, listens on the same port (the
gateway opens it with SO_REUSEPORT; the old one drains, see gateway/http.py).

When ``SMTP_HOST`` is not set, a development mail catcher
(``ops/mailcatcher.py``) runs beside the services, as process
``mailcatcher``, on a port of its own kept in ``var/run/mailcatcher.port``,
writing what it receives to ``var/mail/``; the services mail to it.

Each backend process serves its Prometheus metrics on a free port of its
own (``METRICS_PORT``); ``var/run/prometheus/targets.json`` lists every
process's metrics address for Prometheus (``deploy/prometheus``).

The same module is used by the end-to-end tests, with their own vhost,
databases and port, through ``Cluster``.
"""
import argparse
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import threading
import sys
import time
import urllib.request

import yaml
from kombu import Connection
from nameko.cli.main import setup_yaml_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVICES = {
    "product": "product.service:ProductService",
    "reservation": "reservation.service:ReservationService",
    "delivery": "delivery.service:DeliveryService",
    "mypage": "mypage.service:MyPageService",
    "notification": "notification.service:NotificationService",
    "gateway": "gateway.service:GatewayService",
}
BACKENDS = ["product", "reservation", "delivery", "mypage", "notification"]
MAIL_CATCHER = "mailcatcher"  # not a Nameko service: the development SMTP server, when SMTP_HOST is not set


def load_config(env):
    """config.yml as ``nameko run`` reads it, under the environment ``env``."""
    setup_yaml_parser()
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        with open(os.path.join(ROOT, "config.yml")) as handle:
            return yaml.safe_load(handle)
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Cluster:
    """The five services of one Book Rental system, as processes."""

    def __init__(self, state_dir=None, env=None, python=sys.executable):
        self.state_dir = state_dir or os.path.join(ROOT, "var")
        self.env = dict(env or {})
        self.python = python
        os.makedirs(os.path.join(self.state_dir, "run"), exist_ok=True)
        os.makedirs(os.path.join(self.state_dir, "log"), exist_ok=True)
        os.makedirs(os.path.join(self.state_dir, "data"), exist_ok=True)
        self.mail_dir = os.path.join(self.state_dir, "mail")
        self.mail_catcher_port = None
        if not (self.env.get("SMTP_HOST") or os.environ.get("SMTP_HOST")):
            self.mail_catcher_port = self._catcher_port()
            self.env.update(SMTP_HOST="127.0.0.1", SMTP_PORT=str(self.mail_catcher_port))
        self.config = load_config(self._process_env())

    def _catcher_port(self):
        """The mail catcher's port: chosen once per state directory, so the
        services and a restarted catcher agree on it."""
        path = os.path.join(self.state_dir, "run", f"{MAIL_CATCHER}.port")
        try:
            with open(path) as handle:
                return int(handle.read().strip())
        except (OSError, ValueError):
            pass
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with open(path + ".tmp", "w") as handle:
            handle.write(str(port))
        os.replace(path + ".tmp", path)
        return port

    def _command(self, service):
        if service == MAIL_CATCHER:
            return [self.python, "-m", "ops.mailcatcher", "serve", "--port", str(self.mail_catcher_port),
                    "--dir", self.mail_dir]
        return [self.python, "-m", "nameko", "run", "--config", os.path.join(ROOT, "config.yml"), SERVICES[service]]

    @property
    def gateway_url(self):
        host, port = self.config["WEB_SERVER_ADDRESS"].rsplit(":", 1)
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"

    def _process_env(self, replica=1, service=None):
        env = dict(os.environ)
        env.setdefault("PYTHONWARNINGS", "ignore")
        env["PYTHONPATH"] = ROOT
        for name in SERVICES:
            key = f"{name.upper()}_DB_URI"
            env.setdefault(key, f"sqlite:///{os.path.join(self.state_dir, 'data', name + '.db')}")
        env.setdefault("TOKEN_KEYS", os.path.join(self.state_dir, "keys", "token-keys.pem"))  # gateway/keys.py
        env.update(self.env)
        if service == "gateway" and replica > 1:
            host, port = env.get("GATEWAY_ADDRESS", "127.0.0.1:8000").rsplit(":", 1)
            env["GATEWAY_ADDRESS"] = f"{host}:{int(port) + replica - 1}"
        return env

    # -- pid files ------------------------------------------------------

    def _pidfile(self, service, replica):
        return os.path.join(self.state_dir, "run", f"{service}-{replica}.pid")

    def _infofile(self, service, replica):
        """What else is known of a replica's process: its metrics address."""
        return os.path.join(self.state_dir, "run", f"{service}-{replica}.json")

    def logfile(self, service, replica=1):
        return os.path.join(self.state_dir, "log", f"{service}-{replica}.log")

    def pids(self, service):
        """{replica: pid} of the running replicas of ``service``."""
        found = {}
        prefix = f"{service}-"
        for name in os.listdir(os.path.join(self.state_dir, "run")):
            if name.startswith(prefix) and name.endswith(".pid"):
                replica = int(name[len(prefix):-4])
                with open(os.path.join(self.state_dir, "run", name)) as handle:
                    pid = int(handle.read().strip() or 0)
                if _alive(pid):
                    found[replica] = pid
                else:
                    os.unlink(os.path.join(self.state_dir, "run", name))
                    _unlink(self._infofile(service, replica))
        return found

    # -- start and stop -------------------------------------------------

    def start(self, service, replicas=1, timeout=60):
        running = self.pids(service)
        for replica in sorted(running):
            if replica > replicas:
                self._stop_pids({replica: running.pop(replica)}, service)
        for replica in range(1, replicas + 1):
            if replica not in running:
                self._spawn(service, replica)
        self.wait_consuming(service, replicas, timeout)

    def _spawn(self, service, replica, slot=None):
        """Start a process as ``replica`` (its log, and the gateway's port);
        its pid file is ``slot``'s, the replica's unless it is a replacement."""
        slot = slot or replica
        env = self._process_env(replica, service)
        metrics = self._metrics_address(service, env) if service in SERVICES else None
        if service in BACKENDS:
            env["METRICS_PORT"] = metrics or "0"
        log = open(self.logfile(service, replica), "ab")
        process = subprocess.Popen(
            self._command(service), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        with open(self._pidfile(service, slot), "w") as handle:
            handle.write(str(process.pid))
        with open(self._infofile(service, slot), "w") as handle:
            json.dump({"pid": process.pid, "replica": replica, "metrics": metrics}, handle)
        self.write_targets()
        return process.pid

    def _metrics_address(self, service, env):
        """host:port of the process's /metrics, or None. A backend gets a free
        port unless METRICS_PORT says otherwise (0: off); the gateway serves
        its metrics on its HTTP port."""
        if service == "gateway":
            host, port = env.get("GATEWAY_ADDRESS", "127.0.0.1:8000").rsplit(":", 1)
            return f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        wanted = str(env.get("METRICS_PORT", "") or "auto")
        if wanted in ("0", "off"):
            return None
        if wanted != "auto":
            return wanted if ":" in wanted else f"127.0.0.1:{wanted}"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return f"127.0.0.1:{sock.getsockname()[1]}"

    def metrics_addresses(self, service=None):
        """{(service, replica): host:port} of the running processes' metrics."""
        found = {}
        for name in [service] if service else list(SERVICES):
            for replica in sorted(self.pids(name)):
                try:
                    with open(self._infofile(name, replica)) as handle:
                        address = json.load(handle).get("metrics")
                except (OSError, ValueError):
                    continue
                if address:
                    found[(name, replica)] = address
        return found

    def write_targets(self):
        """var/run/prometheus/targets.json: every process's metrics, in
        Prometheus' file_sd format (deploy/prometheus/prometheus.yml reads it)."""
        # Services start side by side (up): one writer at a time, each
        # listing what runs at that moment, so the last one written is whole.
        with _TARGETS_LOCK:
            directory = os.path.join(self.state_dir, "run", "prometheus")
            os.makedirs(directory, exist_ok=True)
            targets = [{"targets": [address], "labels": {"service": name, "replica": str(replica)}}
                       for (name, replica), address in sorted(self.metrics_addresses().items())]
            path = os.path.join(directory, "targets.json")
            with open(path + ".tmp", "w") as handle:
                json.dump(targets, handle, indent=2)
            os.replace(path + ".tmp", path)

    def wait_consuming(self, service, replicas, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            alive = self.pids(service)
            if len(alive) < replicas:
                raise RuntimeError(f"{service} exited while starting; see {self.logfile(service)}")
            if service == "gateway":
                base, port = self.gateway_url.rsplit(":", 1)
                if all(_http_ok(f"{base}:{int(port) + r - 1}/health/live") for r in range(1, replicas + 1)):
                    return
            elif service == MAIL_CATCHER:
                if _port_open(self.mail_catcher_port):
                    return
            elif self.consumers(service) >= replicas:
                return
            time.sleep(0.2)
        raise TimeoutError(f"{service} did not start consuming within {timeout}s; see {self.logfile(service)}")

    def consumers(self, service):
        """How many processes consume ``service``'s RPC queue right now."""
        try:
            with Connection(self.config["AMQP_URI"], connect_timeout=2) as connection:
                _, _, count = connection.default_channel.queue_declare(f"rpc-{service}", passive=True)
                return count
        except Exception:
            return 0

    def stop(self, service, timeout=30):
        self._stop_pids(self.pids(service), service, timeout)

    def rollout(self, service, timeout=60):
        """Replace every replica of ``service``, one at a time, with no pause
        in service: start the new process, wait until it consumes (the
        gateway: until it listens on the port, beside the old one), then stop
        the old one gracefully. A new process that does not come up is
        stopped and the old one keeps running."""
        running = self.pids(service)
        if not running:
            raise RuntimeError(f"{service} is not running: make start SERVICE={service}")
        for replica in sorted(running):
            old = running[replica]
            slot = max(self.pids(service)) + 1  # the new process's pid file while both run
            new = self._spawn(service, replica, slot)
            try:
                self._wait_replacement(service, replica, new, timeout)
            except BaseException:
                self._stop_pids({slot: new}, service)
                raise
            self._stop_pids({replica: old}, service)
            os.replace(self._pidfile(service, slot), self._pidfile(service, replica))
            os.replace(self._infofile(service, slot), self._infofile(service, replica))
            self.write_targets()

    def _wait_replacement(self, service, replica, pid, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not _alive(pid):
                raise RuntimeError(f"the new {service} exited while starting; see {self.logfile(service, replica)}")
            if service == "gateway":
                base, port = self.gateway_url.rsplit(":", 1)
                port = int(port) + replica - 1
                if _listening(pid, port) and _http_ok(f"{base}:{port}/health/live"):
                    return
            elif self.consumers(service) >= len(self.pids(service)):
                return
            time.sleep(0.2)
        raise TimeoutError(f"the new {service} did not start within {timeout}s; see {self.logfile(service, replica)}")

    def kill(self, service):
        """kill -9 every replica: the crash a fault test wants."""
        for pid in self.pids(service).values():
            os.killpg(pid, signal.SIGKILL)
        self._wait_exit(self.pids(service), 10)
        self.write_targets()

    def _stop_pids(self, pids, service, timeout=30):
        for pid in pids.values():
            _signal(pid, signal.SIGTERM)
        if not self._wait_exit(pids, timeout):
            for pid in pids.values():
                _signal(pid, signal.SIGKILL)
            self._wait_exit(pids, 10)
        for replica in pids:
            if os.path.exists(self._pidfile(service, replica)):
                os.unlink(self._pidfile(service, replica))
            _unlink(self._infofile(service, replica))
        self.write_targets()

    @staticmethod
    def _wait_exit(pids, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not any(_alive(pid) for pid in pids.values()):
                return True
            time.sleep(0.1)
        return False

    def up(self, timeout=90):
        # The backends start side by side: each waits only for its own
        # import, migration and consumers. The gateway comes last, so its
        # first request finds them there. The mail catcher, when there is
        # one, comes first: the first notice finds it.
        if self.mail_catcher_port:
            self.start(MAIL_CATCHER, 1, timeout)
        self._each(BACKENDS, lambda service: self.start(service, max(1, len(self.pids(service))), timeout))
        self.start("gateway", max(1, len(self.pids("gateway"))), timeout)
        self.wait_ready(timeout)

    def down(self):
        self.stop("gateway")  # no new requests first; then the rest, side by side
        self._each(BACKENDS, self.stop)
        self.stop(MAIL_CATCHER)  # last: the mails the services were sending get there

    @staticmethod
    def _each(services, action):
        with concurrent.futures.ThreadPoolExecutor(len(services)) as pool:
            list(pool.map(action, services))

    def wait_ready(self, timeout=90):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if _http_ok(self.gateway_url + "/health/ready"):
                return
            time.sleep(0.3)
        raise TimeoutError(f"{self.gateway_url}/health/ready did not answer 200 within {timeout}s")

    def status(self):
        found = {service: sorted(self.pids(service).values()) for service in SERVICES}
        if self.mail_catcher_port:
            found[MAIL_CATCHER] = sorted(self.pids(MAIL_CATCHER).values())
        return found


_TARGETS_LOCK = threading.Lock()


def _alive(pid):
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not alive
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _listening(pid, port):
    """True when process ``pid`` has a listening TCP socket on ``port`` (Linux /proc)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    except OSError:
        return False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                return True
    return False


def _signal(pid, sig):
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _http_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except Exception:
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "start", "stop", "kill", "status", "rollout", "metrics"])
    parser.add_argument("service", nargs="?", choices=[*SERVICES, MAIL_CATCHER])
    parser.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args(argv)
    cluster = Cluster()
    if args.command in ("start", "stop", "kill", "rollout") and not args.service:
        parser.error("name a SERVICE")
    if args.command == "up":
        cluster.up()
        management = "http://127.0.0.1:15672"
        print(f"Book Rental is up.\n  web app and API: {cluster.gateway_url}/\n"
              f"  API description: {cluster.gateway_url}/openapi.json\n"
              f"  RabbitMQ console: {management}  (guest/guest on a local broker)\n"
              f"  metrics: make metrics (Prometheus targets: var/run/prometheus/targets.json)\n"
              + (f"  mail: notices go to the mail catcher on 127.0.0.1:{cluster.mail_catcher_port}; make mail shows them\n"
                 if cluster.mail_catcher_port else f"  mail: notices are mailed through {cluster.config['SMTP_HOST']}\n") +
              f"  logs: var/log/   stop: make down")
    elif args.command == "down":
        cluster.down()
        print("Book Rental services stopped (the broker keeps running).")
    elif args.command == "start":
        cluster.start(args.service, args.replicas)
        print(f"{args.service}: {args.replicas} replica(s) consuming")
    elif args.command == "stop":
        cluster.stop(args.service)
        print(f"{args.service}: stopped")
    elif args.command == "kill":
        cluster.kill(args.service)
        print(f"{args.service}: killed")
    elif args.command == "rollout":
        cluster.rollout(args.service)
        print(f"{args.service}: every replica replaced, {len(cluster.pids(args.service))} consuming")
    elif args.command == "metrics":
        for (service, replica), address in sorted(cluster.metrics_addresses(args.service).items()):
            print(f"{service}-{replica}\thttp://{address}/metrics")
    else:
        print(json.dumps(cluster.status(), indent=2))


if __name__ == "__main__":
    main()
