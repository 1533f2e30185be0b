"""The operator's printing commands end quietly when their reader goes away
(`make mail | head -1`), as Unix tools do, instead of a BrokenPipeError
traceback."""
import os
import subprocess
import sys
from email.message import EmailMessage

from ops.run import ROOT


def test_make_mail_piped_into_head_ends_without_a_traceback(tmp_path):
    for n in range(400):  # more than a pipe's buffer, so the writer meets the closed pipe
        message = EmailMessage()
        message["To"], message["Subject"] = "alice@example.org", f"notice {n}"
        message.set_content("x" * 200)
        (tmp_path / f"{1_000_000 + n}-1-{n}.eml").write_bytes(bytes(message))
    shown = subprocess.run(
        f"{sys.executable} -m ops.mailcatcher show --dir {tmp_path} --limit 0 | head -1",
        shell=True, cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": ROOT})
    assert shown.stdout.strip(), "the first line was printed"
    assert "Traceback" not in shown.stderr and "BrokenPipeError" not in shown.stderr, shown.stderr
