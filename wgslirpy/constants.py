"""Protocol constants and tool defaults, in one place.

WireGuard timings and limits follow the whitepaper (section 6) under wireguard-go's
names in UPPER_SNAKE. TCP, UDP NAT and DNS defaults follow the Rust wgslirpy tool
unless a comment says why we differ.
"""

from __future__ import annotations

from typing import Final

# --- WireGuard (whitepaper §6.1 and §5.4) ---------------------------------------
REKEY_AFTER_MESSAGES: Final = 2**60
REJECT_AFTER_MESSAGES: Final = 2**64 - 2**13 - 1
REKEY_AFTER_TIME: Final = 120.0
REJECT_AFTER_TIME: Final = 180.0
REKEY_ATTEMPT_TIME: Final = 90.0
REKEY_TIMEOUT: Final = 5.0
REKEY_TIMEOUT_JITTER_MAX: Final = 1.0 / 3.0
KEEPALIVE_TIMEOUT: Final = 10.0
COOKIE_REFRESH_TIME: Final = 120.0
# Initiations accepted from one peer at most every this many seconds (flood guard).
HANDSHAKE_INITIATION_RATE: Final = 1.0 / 50.0

MESSAGE_INITIATION_TYPE: Final = 1
MESSAGE_RESPONSE_TYPE: Final = 2
MESSAGE_COOKIE_REPLY_TYPE: Final = 3
MESSAGE_TRANSPORT_TYPE: Final = 4

MESSAGE_INITIATION_SIZE: Final = 148
MESSAGE_RESPONSE_SIZE: Final = 92
MESSAGE_COOKIE_REPLY_SIZE: Final = 64
MESSAGE_TRANSPORT_HEADER_SIZE: Final = 16
MESSAGE_TRANSPORT_MIN_SIZE: Final = MESSAGE_TRANSPORT_HEADER_SIZE + 16  # header + AEAD tag
MESSAGE_PADDING_MULTIPLE: Final = 16

# Anti-replay window, in packets (wireguard-go uses 8128; a small window drops reordered packets as replays).
REPLAY_WINDOW_SIZE: Final = 8192

# --- Handshake flood guard (wireguard-go ratelimiter.go and device.go) ----------
# Per-source token bucket before any DH: 20 handshakes a second, bursts of 5, keyed by
# IPv4 address or IPv6 /64. Sources idle this long are forgotten; the table is bounded.
HANDSHAKE_RATE_PER_SOURCE: Final = 20.0
HANDSHAKE_BURST_PER_SOURCE: Final = 5
RATE_LIMITER_IDLE_TIME: Final = 1.0
RATE_LIMITER_MAX_SOURCES: Final = 65536
# The peer's current authenticated endpoint has a bucket of its own (same rate).
# Cookie replies, all sources together: at most this many a second (reflection bound).
COOKIE_REPLY_RATE: Final = 1000.0
COOKIE_REPLY_BURST: Final = 100
# Cookies cached per (address, port) until the secret rotates; the cache is bounded.
COOKIE_CACHE_MAX: Final = 4096
# Handshake messages wait in a bounded queue (wireguard-go QueueHandshakeSize), a small
# separate lane for the peer's authenticated endpoint; at most a budget of them is processed
# per reader turn. "Under load" while the queue holds >= HANDSHAKE_LOAD_MARK messages and
# UNDER_LOAD_AFTER_TIME seconds after.
HANDSHAKE_QUEUE_SIZE: Final = 1024
HANDSHAKE_PEER_QUEUE_SIZE: Final = 16
HANDSHAKE_LOAD_MARK: Final = HANDSHAKE_QUEUE_SIZE // 8
HANDSHAKE_TURN_BUDGET: Final = 64
# Under load fewer per turn: on one core, draining the socket (which carries the peer's data)
# comes before answering strangers (the peer's own lane is always served first).
HANDSHAKE_TURN_BUDGET_UNDER_LOAD: Final = 8
UNDER_LOAD_AFTER_TIME: Final = 1.0
# A full WireGuard socket: the sender waits at most this long per batch, then drops the rest.
WG_SEND_WAIT_PER_BATCH: Final = 0.1
# The peer's last authenticated endpoint, remembered across restarts (--endpoint-file):
# written at most this often; ENDPOINT_FILE_NAME is its name inside a state directory.
ENDPOINT_FILE_MIN_INTERVAL: Final = 5.0
ENDPOINT_FILE_NAME: Final = "peer-endpoint"

# --- Tool defaults (the Rust wgslirpy's, unless noted) ----------------------------
DEFAULT_MTU: Final = 1420
# Per-flow TCP buffer maximum in each direction (the Rust tool: 65535). Flows start at
# 64 KiB and grow with the path (receive autotuning, send buffer = 2 x cwnd).
DEFAULT_TCP_BUFFER_SIZE: Final = 4 * 1024 * 1024
DEFAULT_TRANSMIT_QUEUE_CAPACITY: Final = 256
DEFAULT_UDP_IDLE_TIMEOUT: Final = 92.0
DEFAULT_DNS_TTL: Final = 60
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
# Established TCP flows with no traffic either way for this long are aborted.
DEFAULT_TCP_IDLE_TIMEOUT: Final = 7200.0
DEFAULT_MAX_UDP_BINDINGS: Final = 4096
DEFAULT_WG_PORT: Final = 51820
# Limits (issue: hardening). A SYN past either TCP limit gets a RST; fragments past the
# reassembly budget evict the oldest datagram under reassembly.
DEFAULT_MAX_TCP_FLOWS: Final = 65536
DEFAULT_MAX_PENDING_CONNECTS: Final = 1024
DEFAULT_MAX_REASSEMBLY_BYTES: Final = 4 * 1024 * 1024
DEFAULT_MAX_DNS_LOOKUPS: Final = 256

# --- IP -----------------------------------------------------------------------------
IPV4_HEADER_SIZE: Final = 20
IPV6_HEADER_SIZE: Final = 40
TCP_HEADER_SIZE: Final = 20
UDP_HEADER_SIZE: Final = 8
DEFAULT_TTL: Final = 64
# RFC 1122 default MSS when the SYN carries none (IPv4); RFC 8200 minimum for IPv6.
DEFAULT_MSS_IPV4: Final = 536
DEFAULT_MSS_IPV6: Final = 1220
MAX_UDP_PAYLOAD_IPV4: Final = 65507
MAX_UDP_PAYLOAD_IPV6: Final = 65527

# --- Tunnel MTU ----------------------------------------------------------------------
# The tunnel carries IPv6, and IPv6 needs every link to carry 1280-byte packets (RFC 8200
# §5), so no tunnel MTU below that is valid. This is the one rule: config.py checks it, and a
# core that validates its own mtu argument (wg/endpoint.py, net/tcp.py) checks the same
# constant rather than a smaller floor of its own (IPv4's 68, TCP's headers + minimum MSS).
MIN_MTU: Final = 1280
MAX_MTU: Final = 65535
