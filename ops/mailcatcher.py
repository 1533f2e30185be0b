"""A mail catcher for development: an SMTP server that keeps what it receives.

``make up`` starts one when ``SMTP_HOST`` is not set, and points the
services at it; ``make mail`` shows what it caught. It is aiosmtpd (the
asyncio SMTP server of the aio-libs project) with a handler that writes each
message, as received, to ``<dir>/<time>-<n>.eml`` (written to a temporary
name first, then renamed, so a reader never sees half a mail). It accepts
every message and relays none.

    python -m ops.mailcatcher serve --port 2525 --dir var/mail
    python -m ops.mailcatcher show --dir var/mail [--limit 10]
"""
import argparse
import itertools
import os
import signal
import sys
import threading
import time
from email import policy
from email.parser import BytesParser

from ops import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DIR = os.path.join(ROOT, "var", "mail")


class Keeper:
    """aiosmtpd handler: every message accepted is one .eml file."""

    def __init__(self, directory):
        self.directory = directory
        self.counter = itertools.count(1)
        os.makedirs(directory, exist_ok=True)

    async def handle_DATA(self, server, session, envelope):
        name = f"{time.time_ns()}-{os.getpid()}-{next(self.counter)}.eml"
        path = os.path.join(self.directory, name)
        with open(path + ".tmp", "wb") as handle:
            handle.write(f"X-Envelope-From: {envelope.mail_from}\r\n".encode())
            handle.write(f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n".encode())
            handle.write(envelope.original_content or envelope.content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(path + ".tmp", path)
        return "250 Message accepted for delivery"


def serve(host, port, directory):
    from aiosmtpd.controller import Controller

    controller = Controller(Keeper(directory), hostname=host, port=port)
    controller.start()
    print(f"mail catcher on {host}:{port}, writing to {directory}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    controller.stop()


def caught(directory):
    """The messages in ``directory``, oldest first: [(file name, email.message.EmailMessage)]."""
    if not os.path.isdir(directory):
        return []
    found = []
    for name in sorted(os.listdir(directory), key=lambda n: int(n.split("-", 1)[0]) if n[0].isdigit() else 0):
        if name.endswith(".eml"):
            with open(os.path.join(directory, name), "rb") as handle:
                found.append((name, BytesParser(policy=policy.default).parse(handle)))
    return found


def show(directory, limit, out=sys.stdout):
    messages = caught(directory)
    if not messages:
        print(f"No mail caught yet ({directory}).", file=out)
        return
    shown = messages[-limit:] if limit else messages
    print(f"{len(messages)} mail(s) caught in {directory}"
          + (f"; the last {len(shown)}:" if len(shown) < len(messages) else ":"), file=out)
    for _name, message in shown:
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content().split("\n-- \n")[0].strip() if body is not None else ""
        print(f"\n{message['Date']}  to {message['To']}\n  Subject: {message['Subject']}", file=out)
        for line in text.splitlines():
            print(f"  | {line}", file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ops.mailcatcher", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the SMTP server")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--dir", default=DEFAULT_DIR)
    look = commands.add_parser("show", help="print what was caught")
    look.add_argument("--dir", default=os.environ.get("MAIL_DIR") or DEFAULT_DIR)
    look.add_argument("--limit", type=int, default=10, help="show the last N mails (0: all)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.host, args.port, args.dir)
    else:
        cli.quiet_when_reader_leaves()
        show(args.dir, args.limit)


if __name__ == "__main__":
    main()
