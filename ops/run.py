"""Start and stop the services as local processes: ``make up/down/start/stop``.

Each replica is one ``nameko run`` process with a pid file in ``var/run`` and
a log in ``var/log``. ``start`` returns once every replica is consuming (the
broker counts its consumers on the service's RPC queue; the gateway answers
HTTP); ``stop`` returns once every replica has exited (SIGTERM lets Nameko
finish the work in hand; SIGKILL after a grace period).

The same module is used by the end-to-end tests, with their own vhost,
databases and port, through ``Cluster``.
"""
import argparse
import json
import os
import signal
import subprocess
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
    "gateway": "gateway.service:GatewayService",
}
BACKENDS = ["product", "reservation", "delivery", "mypage"]


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
        self.config = load_config(self._process_env())

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
        env.update(self.env)
        if service == "gateway" and replica > 1:
            host, port = env.get("GATEWAY_ADDRESS", "127.0.0.1:8000").rsplit(":", 1)
            env["GATEWAY_ADDRESS"] = f"{host}:{int(port) + replica - 1}"
        return env

    # -- pid files ------------------------------------------------------

    def _pidfile(self, service, replica):
        return os.path.join(self.state_dir, "run", f"{service}-{replica}.pid")

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

    def _spawn(self, service, replica):
        log = open(self.logfile(service, replica), "ab")
        process = subprocess.Popen(
            [self.python, "-m", "nameko", "run", "--config", os.path.join(ROOT, "config.yml"), SERVICES[service]],
            cwd=ROOT, env=self._process_env(replica, service), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        with open(self._pidfile(service, replica), "w") as handle:
            handle.write(str(process.pid))
        return process.pid

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

    def kill(self, service):
        """kill -9 every replica: the crash a fault test wants."""
        for pid in self.pids(service).values():
            os.killpg(pid, signal.SIGKILL)
        self._wait_exit(self.pids(service), 10)

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

    @staticmethod
    def _wait_exit(pids, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not any(_alive(pid) for pid in pids.values()):
                return True
            time.sleep(0.1)
        return False

    def up(self, timeout=90):
        for service in BACKENDS + ["gateway"]:
            self.start(service, max(1, len(self.pids(service))), timeout)
        self.wait_ready(timeout)

    def down(self):
        for service in ["gateway"] + BACKENDS:
            self.stop(service)

    def wait_ready(self, timeout=90):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if _http_ok(self.gateway_url + "/health/ready"):
                return
            time.sleep(0.3)
        raise TimeoutError(f"{self.gateway_url}/health/ready did not answer 200 within {timeout}s")

    def status(self):
        return {service: sorted(self.pids(service).values()) for service in SERVICES}


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


def _signal(pid, sig):
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _http_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except Exception:
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "start", "stop", "kill", "status"])
    parser.add_argument("service", nargs="?", choices=list(SERVICES))
    parser.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args(argv)
    cluster = Cluster()
    if args.command in ("start", "stop", "kill") and not args.service:
        parser.error("name a SERVICE")
    if args.command == "up":
        cluster.up()
        management = "http://127.0.0.1:15672"
        print(f"Book Rental is up.\n  web app and API: {cluster.gateway_url}/\n"
              f"  API description: {cluster.gateway_url}/openapi.json\n"
              f"  RabbitMQ console: {management}  (guest/guest on a local broker)\n"
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
    else:
        print(json.dumps(cluster.status(), indent=2))


if __name__ == "__main__":
    main()
