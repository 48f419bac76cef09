"""mac1/mac2 and cookie replies: WireGuard's DoS mitigation (whitepaper §5.3, §5.4.4, §5.4.7).

* :class:`CookieChecker` is the receiving side, keyed by OUR static public key: it verifies mac1
  (cheap, done before any DH), verifies mac2 against a cookie derived from the sender's address
  and a secret rotated every COOKIE_REFRESH_TIME, and builds cookie replies.
* :class:`CookieGenerator` is the sending side, keyed by the PEER's static public key: it fills
  mac1 and mac2 into outgoing handshake messages, and stores the cookie of a cookie reply
  (decrypted with aad = the mac1 we last sent) so retries carry a valid mac2.

Keys: mac1 key = HASH("mac1----" || Spub), cookie key = HASH("cookie--" || Spub).
mac1 = MAC(mac1 key, msg up to mac1); mac2 = MAC(cookie, msg up to mac2).

Rejection is cheap: a sender's cookie is computed once per secret rotation and cached
(bounded by COOKIE_CACHE_MAX; a full cache is emptied, never grown). Objects here hold key
material, so their ``repr`` shows none of it.
"""

from __future__ import annotations

import hmac as _hmac
import ipaddress
from collections.abc import Callable

from ..constants import COOKIE_CACHE_MAX, COOKIE_REFRESH_TIME
from . import crypto
from .messages import MAC1_FROM_END, MAC2_FROM_END, CookieReply, encode_cookie_reply

_ZERO_MAC = bytes(crypto.MAC_SIZE)


def address_bytes(addr: tuple[str, int]) -> bytes:
    """The sender address as the cookie is bound to it: packed IP then big-endian port."""
    host, port = addr[0], addr[1]
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0]).packed
    except ValueError:
        ip = host.encode("utf-8", "replace")
    return ip + (port & 0xFFFF).to_bytes(2, "big")


class CookieChecker:
    """Verifies macs on handshake messages sent to us, and answers with cookie replies."""

    def __init__(self, local_public: bytes, rng: Callable[[int], bytes]) -> None:
        self._mac1_key = crypto.hash_(crypto.LABEL_MAC1, local_public)
        self._cookie_key = crypto.hash_(crypto.LABEL_COOKIE, local_public)
        self._rng = rng
        #: random secret the cookies are MACs under; replaced when older than COOKIE_REFRESH_TIME.
        self._secret = b""
        #: monotonic time ``_secret`` was drawn; None before the first use.
        self._secret_set: float | None = None
        #: (host, port) -> MAC(_secret, address): cookies under the current secret only;
        #: len <= COOKIE_CACHE_MAX.
        self._cookies: dict[tuple[str, int], bytes] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} (keys redacted)>"

    def check_mac1(self, msg: bytes) -> bool:
        mac1 = crypto.mac(self._mac1_key, msg[:-MAC1_FROM_END])
        return _hmac.compare_digest(mac1, msg[-MAC1_FROM_END:-MAC2_FROM_END])

    def _cookie(self, addr: tuple[str, int], now: float) -> bytes:
        cookies = self._cookies
        if self._secret_set is None or now - self._secret_set >= COOKIE_REFRESH_TIME:
            self._secret = self._rng(crypto.KEY_SIZE)
            self._secret_set = now
            cookies.clear()
        cookie = cookies.get(addr)
        if cookie is None:
            if len(cookies) >= COOKIE_CACHE_MAX:
                cookies.clear()
            cookie = cookies[addr] = crypto.mac(self._secret, address_bytes(addr))
        return cookie

    def check_mac2(self, msg: bytes, addr: tuple[str, int], *, now: float) -> bool:
        mac2 = crypto.mac(self._cookie(addr, now), msg[:-MAC2_FROM_END])
        return _hmac.compare_digest(mac2, msg[-MAC2_FROM_END:])

    def create_reply(self, msg: bytes, receiver: int, addr: tuple[str, int], *, now: float) -> bytes:
        """A cookie reply to handshake ``msg`` whose sender index is ``receiver``."""
        nonce = self._rng(crypto.XNONCE_SIZE)
        mac1 = msg[-MAC1_FROM_END:-MAC2_FROM_END]
        sealed = crypto.xaead_encrypt(self._cookie_key, nonce, self._cookie(addr, now), mac1)
        return encode_cookie_reply(receiver, nonce, sealed)


class CookieGenerator:
    """Adds mac1/mac2 to the handshake messages we send to one peer."""

    def __init__(self, peer_public: bytes) -> None:
        self._mac1_key = crypto.hash_(crypto.LABEL_MAC1, peer_public)
        self._cookie_key = crypto.hash_(crypto.LABEL_COOKIE, peer_public)
        #: the mac1 of the last handshake message sent; None once a cookie reply consumed it,
        #: so each message earns at most one cookie.
        self._last_mac1: bytes | None = None
        #: the last cookie received and when; it stops being used COOKIE_REFRESH_TIME later.
        self._cookie = b""
        self._cookie_set: float | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} (keys redacted)>"

    def add_macs(self, msg: bytes, *, now: float) -> bytes:
        """``msg`` (with zero macs) with mac1 set, and mac2 if we hold a fresh cookie."""
        body = msg[:-MAC1_FROM_END]
        mac1 = crypto.mac(self._mac1_key, body)
        self._last_mac1 = mac1
        mac2 = _ZERO_MAC
        if self._cookie_set is not None and now - self._cookie_set < COOKIE_REFRESH_TIME:
            mac2 = crypto.mac(self._cookie, body + mac1)
        return body + mac1 + mac2

    def consume_reply(self, reply: CookieReply, *, now: float) -> bool:
        """Store the cookie of ``reply``; False if we expected none or it does not verify."""
        if self._last_mac1 is None:
            return False
        try:
            cookie = crypto.xaead_decrypt(self._cookie_key, reply.nonce, reply.encrypted_cookie, self._last_mac1)
        except crypto.CryptoError:
            return False
        self._cookie = cookie
        self._cookie_set = now
        self._last_mac1 = None
        return True
