"""Loaded by schemathesis (SCHEMATHESIS_HOOKS): how to make a value of the
OpenAPI document's own formats, which no pattern can describe.

``isbn``: an ISBN-10 or ISBN-13 whose check digit is right, typed with or
without hyphens or spaces (POST /books refuses any other with 400).

``keyset-cursor``: what GET /mypage answers as ``next`` (a moment and an id,
gateway.schemas.keyset_cursor); any other is refused with 400.
"""
import base64
import json

import schemathesis
from hypothesis import strategies as st
from stdnum import ean, isbn


def _isbn(nine_digits, length, separator):
    thirteen = "978" + nine_digits
    thirteen += ean.calc_check_digit(thirteen)
    typed = thirteen if length == 13 else isbn.to_isbn10(thirteen)
    return separator.join([typed[:3], typed[3:-1], typed[-1]]) if separator else typed


schemathesis.openapi.format("isbn", st.builds(
    _isbn, st.text("0123456789", min_size=9, max_size=9), st.sampled_from([10, 13]), st.sampled_from(["", "-", " "])))


def _cursor(at, reservation_id):  # as gateway.schemas.keyset_cursor makes one
    return base64.urlsafe_b64encode(json.dumps([at, reservation_id], separators=(",", ":")).encode()).decode().rstrip("=")


_CURSOR_TEXT = st.characters(min_codepoint=0x20, max_codepoint=0x7e)  # printable ASCII
schemathesis.openapi.format("keyset-cursor", st.builds(
    _cursor,
    st.text(_CURSOR_TEXT, max_size=40), st.text(_CURSOR_TEXT, min_size=1, max_size=36)))
