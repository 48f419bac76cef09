"""WireGuard keys: the one place that says what a valid key is.

Every key WireGuard uses — our X25519 private key, the peer's public key, the optional
preshared key — is 32 raw bytes (whitepaper §5.4; Curve25519 keys per RFC 7748). Users write
them as base64 (``wg genkey``), 44 characters, which ``config.parse_key`` decodes.
:func:`check_key` is the size rule for raw keys; it raises :class:`~wgslirpy.errors.ConfigError`
with a message that names what the key was for.

Pure and dependency-free, so the configuration (``config.py``) and the cores (``wg/``) share
the rule instead of restating it.
"""

from __future__ import annotations

from typing import Final

from .errors import ConfigError

__all__ = ["KEY_SIZE", "check_key"]

#: Length in bytes of every WireGuard key (private, public, preshared).
KEY_SIZE: Final = 32


def check_key(value: object, what: str) -> bytes:
    """``value`` itself if it is a raw key (``bytes`` of :data:`KEY_SIZE`), else ``ConfigError``."""
    if isinstance(value, bytes) and len(value) == KEY_SIZE:
        return value
    got = f"this one has {len(value)}" if isinstance(value, (bytes, bytearray)) else f"not {type(value).__name__}"
    raise ConfigError(f"{what}: a key must be {KEY_SIZE} bytes, {got}")
