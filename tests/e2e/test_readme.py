"""The README's story is copy-paste: run its shell block against a live system."""
import os
import re
import subprocess

import pytest

pytestmark = pytest.mark.e2e
README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def test_the_readme_story_runs_as_written(system):
    text = open(README).read()
    story = re.search(r"## The story, by copy-paste.*?```bash\n(.*?)```", text, re.S).group(1)
    env = {**os.environ, "B": system.gateway_url, "MAIL_DIR": system.mail_dir}  # make mail reads this system's
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", story], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert '"isbn": "9780441172719"' in lines[0]  # found by its ISBN, typed with a hyphen
    assert '"status": "confirmed"' in lines[1] and '"status": "waitlisted"' in lines[2]
    assert lines[3] == "[1]"  # bob's queue_position on MyPage
    assert '"status": "returned"' in result.stdout and '"status": "canceled"' in result.stdout
    assert '"kind": "delivered"' in result.stdout  # alice's notices
    assert "to alice@example.org" in result.stdout  # and her mails
    assert '"stock": 1' in lines[-1]
