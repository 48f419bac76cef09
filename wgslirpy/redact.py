"""Secret redaction: key material never reaches a repr, a str or a log line.

Objects holding keys define ``__repr__`` with :func:`redacted_repr` (dataclasses) or show no
fields at all. Keys are printed only where a user asks for them (``genkey``-style output).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

REDACTED = "<redacted>"


def redacted_repr(obj: Any, secret_fields: Iterable[str]) -> str:
    """``Name(field=value, ...)`` like a dataclass repr, with ``secret_fields`` shown as
    <redacted> (or None when unset)."""
    secrets = frozenset(secret_fields)
    parts = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        shown = REDACTED if f.name in secrets and value is not None else repr(value)
        parts.append(f"{f.name}={shown}")
    return f"{type(obj).__name__}({', '.join(parts)})"
