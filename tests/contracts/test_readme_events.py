"""The README's table of events is the generated one, not a copy going stale."""
import os
import re

from common import asyncapi

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def test_the_readme_lists_every_event_as_the_schemas_describe_it():
    block = re.search(r"<!-- events:begin.*?-->\n(.*?)\n<!-- events:end -->", open(README).read(), re.S).group(1)
    assert block == asyncapi.event_table(), "README's table of events is stale: run `make docs`"
