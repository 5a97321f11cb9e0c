"""JSON of the decision path: orjson (a C core) where it is exact, the stdlib where it is not.

orjson refuses to write an integer past 64 bits, and reads one as a float, silently. Money is text
in every body, but a policy's reason may carry any number, and what the service stores and answers
again must be what it answered first. So writing falls back to the stdlib when orjson refuses, and
reading does when the text holds a run of 20 or more digits (an integer past 64 bits has at least
20; a long digit run inside a string only costs the slower parse), and when orjson refuses the text
(a number past a double's range, or text that is not JSON: the stdlib's reading, or its error).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = ["dumps", "dumps_text", "loads"]

_LONG_DIGITS = re.compile(rb"[0-9]{20}")
_LONG_DIGITS_TEXT = re.compile(r"[0-9]{20}")


def dumps(document: Any) -> bytes:
    """Compact JSON bytes of `document`, integers of any size exact."""
    try:
        return orjson.dumps(document)
    except TypeError:
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def dumps_text(document: Any) -> str:
    """`dumps` as text: a JSON column's value, a policy input for regorus."""
    return dumps(document).decode()


def loads(raw: bytes | str) -> Any:
    """The document of JSON text, integers of any size exact."""
    if isinstance(raw, str):
        long_digits = _LONG_DIGITS_TEXT.search(raw) is not None
    else:
        long_digits = _LONG_DIGITS.search(raw) is not None
    if not long_digits:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the stdlib reads what orjson refuses (a number past a double's range) or says what is wrong
    return json.loads(raw)
