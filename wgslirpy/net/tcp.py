"""One terminated TCP flow: a userspace TCP endpoint, sans I/O.

The WireGuard peer is the TCP client; we are the server and relay the byte stream to an OS
socket (slirp style). :meth:`TcpConnection.connect` is the active open (SYN-SENT), used by
the link-simulator tests as the client. This module is the state machine: RFC 9293 (states, segment
acceptance), RFC 1122 (delayed ACK, SWS avoidance), RFC 7323 (window scaling, always
offered with the shift of the largest buffer; timestamps), RFC 2018 / RFC 2883 (we send
SACK and D-SACK blocks, most recent first), RFC 5961 (challenge ACKs) and RFC 6298 (RTO).
The parts with a job of their own live beside it:

* ``net/rtt.py`` — RFC 6298 estimator and the minimum RTT;
* ``net/recovery.py`` + ``net/sack.py`` + ``net/rack.py`` — what is in flight, the SACK
  scoreboard (RFC 6675) and RACK-TLP loss detection (RFC 8985); ``net/prr.py`` — PRR
  (RFC 6937) sizes sending during recovery;
* the congestion controller (``net/congestion/``: CUBIC, NewReno, BBR-like); when it asks
  for pacing (``pacing_rate``) sends follow a token bucket and a pacing deadline;
* the receive-buffer tuner (Linux-style dynamic right-sizing): the advertised window grows
  with what the host really consumes per RTT, up to ``rcv_buffer``; the send buffer
  (``send_space``) follows ``2 x cwnd`` up to ``snd_buffer``. Buffers hold only data, so
  idle flows stay small.

Spurious retransmissions are undone (Eifel detection with timestamps, RFC 3522 / RFC 4015
response; F-RTO without them, RFC 5682; D-SACK, RFC 3708): the controller's ``undo()`` restores the window and RACK's
reordering window widens. Per-flow ``counters`` (a :class:`TcpCounters`: rto, fast_recovery, tlp,
retransmitted_bytes, spurious_undone, dsack_received) feed the gateway's stats.

Driving contract (aioquic/smoltcp style, see docs/ARCHITECTURE.md):

* Network side: :meth:`TcpConnection.handle_segment` never raises on any segment; bad
  input is dropped and counted in ``drops``. :meth:`segments_to_send` returns everything
  due now; call it after *every* other call. :meth:`next_deadline` / :meth:`handle_timer`
  drive the timers. :meth:`next_event` pops :data:`TcpEvent` values.
* Host side: :meth:`accept` / :meth:`refuse` once the shell's dial finished, then
  :meth:`send` (bounded by :attr:`send_space`: that is the backpressure), :meth:`read`,
  :meth:`close` (host EOF) and :meth:`abort` (host reset).
* After :class:`Closed`, :meth:`segments_to_send` may still return a final RST: drain it
  before forgetting the flow. :meth:`read` keeps returning buffered peer data after close.

Simplifications, on purpose:

* PAWS (RFC 7323 §5) is the simple form: a non-RST segment whose TSval is older than
  TS.Recent is dropped and re-ACKed; the 24-day idle rule is not implemented. Segments
  without timestamps on a timestamp connection are accepted.
* Data carried on the SYN is ignored (not ACKed); the peer sends it again.
* Zero-window probes are Linux style: an empty ACK with ``seq = SND.UNA - 1`` that the peer
  must answer; probes back off exponentially and only give up after ``max_retransmits``
  probes *without any answer*.
* A new SYN in TIME-WAIT gets a (rate-limited) challenge ACK; a real client answers it
  with a RST, which closes us, and its retransmitted SYN then opens a new flow.
  :meth:`can_reopen` tells the stack whether RFC 6191-style immediate reuse would be safe.
* FIN-WAIT-2 ends after ``fin_wait_2_timeout`` seconds *without any segment from the
  peer* (a half-closed peer that keeps sending is never cut off).
* The peer's FIN in ESTABLISHED is ACKed within the delayed-ACK time, not at once (as Linux
  does): the host mostly closes at EOF, and our FIN then carries the ACK. After our own FIN
  the peer's FIN is ACKed at once.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass

from wgslirpy.constants import (
    DEFAULT_MSS_IPV4,
    DEFAULT_MSS_IPV6,
    DEFAULT_TCP_BUFFER_SIZE,
    IPV4_HEADER_SIZE,
    IPV6_HEADER_SIZE,
    MAX_MTU,
    MIN_MTU,
    TCP_HEADER_SIZE,
)
from wgslirpy.errors import ConfigError, DropCounter, DropReason, _Drop
from wgslirpy.net.congestion import DEFAULT_CONGESTION_CONTROL, make_congestion_control
from wgslirpy.net.prr import Prr
from wgslirpy.net.rack import DUP_THRESH, probe_timeout
from wgslirpy.net.rcvbuf import ReceiveBufferTuner, ReceiverRttEstimator
from wgslirpy.net.reassembly import ReassemblyQueue
from wgslirpy.net.recovery import Sent, SentQueue
from wgslirpy.net.rtt import MAX_RTT_SAMPLE, RttEstimator
from wgslirpy.net.segments import IPAddress, TcpFlags, TcpSegment
from wgslirpy.net.sendbuf import SendBuffer
from wgslirpy.net.seq import HALF, MASK, MOD, seq_diff, seq_ge, seq_gt, seq_lt

__all__ = [
    "State",
    "TcpConfig",
    "TcpConnection",
    "RttEstimator",
    "PeerFin",
    "PeerReset",
    "TimedOut",
    "TimeoutReason",
    "Closed",
    "TcpEvent",
]

# Raw flag bits: cheaper than IntFlag arithmetic on the hot path.
_FIN = 0x01
_SYN = 0x02
_RST = 0x04
_ACK = 0x10

_F_ACK = TcpFlags.ACK
_F_ACK_PSH = TcpFlags.ACK | TcpFlags.PSH
_F_FIN_ACK = TcpFlags.FIN | TcpFlags.ACK
_F_FIN_ACK_PSH = TcpFlags.FIN | TcpFlags.ACK | TcpFlags.PSH
_F_SYN_ACK = TcpFlags.SYN | TcpFlags.ACK
_F_RST = TcpFlags.RST
_F_RST_ACK = TcpFlags.RST | TcpFlags.ACK

# Smallest peer MSS we honour (Linux tcp_min_snd_mss): a tiny MSS would mean huge overhead.
MIN_MSS = 48
# Timestamp option on every segment: NOP NOP kind len TSval TSecr (RFC 7323 appendix A).
TS_OPTION_LEN = 12
# RFC 5961 challenge ACKs allowed per connection and second.
CHALLENGE_ACK_LIMIT = 10
#: receive buffer a flow starts with (the tuner grows it up to TcpConfig.rcv_buffer).
RCV_BUFFER_INITIAL = 64 * 1024
#: send buffer a flow always may fill (send_space follows 2 x cwnd above this).
SND_BUFFER_MIN = 64 * 1024
#: most holes the out-of-order queue keeps (RFC 2018 needs only a few; more is hostile).
OOO_MAX_BLOCKS = 256
#: memory the out-of-order queue may spend beyond the receive window (chunk overhead).
OOO_SLACK = 64 * 1024
#: pacing bursts: at most this long at the pacing rate, and at least this many segments.
PACE_BURST_TIME = 0.002
PACE_BURST_SEGMENTS = 4
#: a paced sender wakes up when this much is due: at least 2 segments or 1 ms of sending.
PACE_QUANTUM_SEGMENTS = 2
PACE_QUANTUM_TIME = 0.001
#: a paced sender waits at least this long (the next deadline must lie in the future).
PACE_MIN_WAIT = 1e-5
#: a pacing-limited sender that wakes up late (a gevent timer fires >= 1 ms after it was
#: asked for, later on a busy loop) may still send what fell due since, up to this long at
#: the pacing rate: otherwise every late wake-up loses send time, the delivery rate falls
#: below the pacing rate and a rate-based controller's estimate spirals down.
PACE_LATE_CREDIT_TIME = 0.010


@dataclass(slots=True)
class TcpCounters:
    """The event counts every connection keeps (the stats line and the benchmark read them
    through :meth:`as_dict`); each only grows."""

    rto: int = 0
    fast_recovery: int = 0
    tlp: int = 0
    retransmitted_bytes: int = 0
    spurious_undone: int = 0
    dsack_received: int = 0

    def as_dict(self) -> dict[str, int]:
        # Every closed flow's counters are folded into the stack's totals: a comprehension
        # costs a seventh of dataclasses.asdict (which deep-copies, ~4 us).
        return {name: getattr(self, name) for name in _COUNTER_NAMES}


_COUNTER_NAMES = tuple(TcpCounters.__dataclass_fields__)


class State(enum.Enum):
    SYN_SENT = "SYN-SENT"  # active open only (TcpConnection.connect)
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSING = "CLOSING"
    TIME_WAIT = "TIME-WAIT"
    CLOSE_WAIT = "CLOSE-WAIT"
    LAST_ACK = "LAST-ACK"
    CLOSED = "CLOSED"


class Timer(enum.Enum):
    """The single main timer (smoltcp ``Timer``); the delayed-ACK deadline is separate."""

    NONE = "none"
    RETRANSMIT = "retransmit"  # data, FIN or SYN-ACK in flight
    PERSIST = "persist"  # zero peer window with data waiting, nothing in flight
    CLOSE = "close"  # TIME-WAIT 2MSL, or FIN-WAIT-2 inactivity
    IDLE = "idle"  # nothing to do: abort after idle_timeout without traffic


class Recovery(enum.Enum):
    """Loss-recovery state of the sender (Linux's CA states, simplified)."""

    OPEN = "open"  # no loss being repaired
    RECOVERY = "recovery"  # fast / SACK recovery (RFC 6675), sending sized by PRR
    LOSS = "loss"  # after an RTO: slow start, retransmit everything not SACKed


# States in which we may (re)transmit data or our FIN.
_SENDING = frozenset({State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_1, State.CLOSING, State.LAST_ACK})
# States in which the host may queue data.
_HOST_SENDING = frozenset({State.SYN_SENT, State.SYN_RECEIVED, State.ESTABLISHED, State.CLOSE_WAIT})
# States in which the peer may still send data / its FIN.
_RECEIVING = frozenset({State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2})
# Module-level names for the members the per-segment paths test (``State.X`` costs an
# attribute lookup on the enum class each time, ~40 ns).
_S_CLOSED = State.CLOSED
_S_TIME_WAIT = State.TIME_WAIT
_S_SYN_RECEIVED = State.SYN_RECEIVED
_S_SYN_SENT = State.SYN_SENT
_S_FIN_WAIT_2 = State.FIN_WAIT_2
_T_RETRANSMIT = Timer.RETRANSMIT
_T_PERSIST = Timer.PERSIST


@dataclass(frozen=True, slots=True)
class PeerFin:
    """The peer's FIN arrived in order: after reading what is buffered, shut down host writes."""


@dataclass(frozen=True, slots=True)
class PeerReset:
    """An acceptable RST arrived: reset the host socket."""


class TimeoutReason(enum.Enum):
    """Why a connection gave up (:class:`TimedOut`)."""

    RETRANSMIT = "retransmit"  # max_retransmits RTOs without progress
    SYN_ACK = "syn-ack"  # our SYN-ACK was never acknowledged
    PERSIST = "persist"  # zero-window probes without any answer
    IDLE = "idle"  # no segment either way for idle_timeout
    FIN_WAIT_2 = "fin-wait-2"  # the peer never sent its FIN


@dataclass(frozen=True, slots=True)
class TimedOut:
    """We gave up (see :class:`TimeoutReason`); a RST went out."""

    why: TimeoutReason


@dataclass(frozen=True, slots=True)
class Closed:
    """The flow is finished for good and can be forgotten (emitted exactly once)."""


TcpEvent = PeerFin | PeerReset | TimedOut | Closed


@dataclass(frozen=True, slots=True)
class TcpConfig:
    """Per-flow knobs; validated on construction (ConfigError)."""

    #: tunnel MTU; our MSS = min(peer MSS, mtu - 40 (IPv4) / mtu - 60 (IPv6)).
    mtu: int = 1420
    #: largest receive buffer (peer bytes not yet read() by the host), --tcp-buffer-size;
    #: the advertised window starts at 64 KiB (or this if smaller) and grows with the host.
    rcv_buffer: int = DEFAULT_TCP_BUFFER_SIZE
    #: largest send buffer (host bytes accepted by send() and not yet acknowledged).
    snd_buffer: int = DEFAULT_TCP_BUFFER_SIZE
    #: no segment either way for this long -> RST + TimedOut("idle").
    idle_timeout: float = 7200.0
    #: 2MSL in TIME-WAIT.
    time_wait: float = 30.0
    min_rto: float = 0.2
    max_rto: float = 60.0
    initial_rto: float = 1.0
    #: consecutive RTOs (or unanswered zero-window probes) before giving up.
    max_retransmits: int = 10
    syn_ack_retries: int = 5
    #: longest ACK delay; every second full-sized segment is ACKed at once.
    delayed_ack: float = 0.04
    window_scale: bool = True
    timestamps: bool = True
    sack: bool = True
    #: FIN-WAIT-2 ends after this long without any segment from the peer.
    fin_wait_2_timeout: float = 60.0
    #: congestion control algorithm (--congestion).
    congestion: str = DEFAULT_CONGESTION_CONTROL

    def __post_init__(self) -> None:
        if not MIN_MTU <= self.mtu <= MAX_MTU:
            raise ConfigError(f"tunnel MTU {self.mtu} out of range ({MIN_MTU}..{MAX_MTU})")
        if self.rcv_buffer < 1 or self.snd_buffer < 1:
            raise ConfigError("TCP buffer sizes must be at least 1 byte")
        if self.rcv_buffer > (0xFFFF << 14):
            raise ConfigError(
                f"TCP receive buffer {self.rcv_buffer} exceeds the largest scaled window ({0xFFFF << 14})"
            )
        if not 0 < self.min_rto <= self.initial_rto <= self.max_rto:
            raise ConfigError("TCP RTO bounds must satisfy 0 < min_rto <= initial_rto <= max_rto")
        if self.max_retransmits < 1 or self.syn_ack_retries < 0:
            raise ConfigError("TCP retry counts must be positive")
        if self.delayed_ack < 0 or self.time_wait < 0 or self.idle_timeout <= 0 or self.fin_wait_2_timeout <= 0:
            raise ConfigError("TCP timeouts must be positive")
        make_congestion_control(self.congestion, mss=1000)  # ConfigError names the choices


def _window_shift(buffer: int) -> int:
    """Smallest RFC 7323 shift that lets ``buffer`` fit the 16-bit window field."""
    shift = 0
    while (buffer >> shift) > 0xFFFF and shift < 14:
        shift += 1
    return shift


def _sack_option_len(blocks: int) -> int:
    """Bytes a SACK option with ``blocks`` blocks takes, padded to 4."""
    return 0 if blocks == 0 else ((2 + 8 * blocks + 3) // 4) * 4


class TcpConnection:
    """Server-side TCP for one 4-tuple, created from the client's bare SYN."""

    # Slots: a connection is the per-flow cost of an idle flow (10,000 of them must fit), and
    # a slotted instance is ~2.5 KB smaller than one with a 90-key __dict__. "__dict__" stays
    # for attributes set from outside (tests patch methods on an instance).
    __slots__ = (
        "_ack_at",
        "_ack_now",
        "_challenge_count",
        "_challenge_start",
        "_consumed",
        "_consumed_fed",
        "_ctl",
        "_cwnd_limited",
        "_dsack",
        "_dupacks",
        "_events",
        "_fin_received",
        "_fin_seq",
        "_frto",
        "_frto_new",
        "_host_closed",
        "_last_ack_sent",
        "_last_activity",
        "_last_rx",
        "_local",
        "_lport",
        "_ooo",
        "_pace_at",
        "_pace_limited",
        "_pace_t",
        "_pace_tokens",
        "_peer",
        "_persist_backoff",
        "_pport",
        "_probe_due",
        "_probes",
        "_prr",
        "_q",
        "_rcv_field_max",
        "_rcv_fin_seq",
        "_rcv_off",
        "_rcv_seg_max",
        "_rcv_unacked",
        "_rcv_ws",
        "_recovery_point",
        "_reo_at",
        "_retransmits",
        "_rrtt_ecr",
        "_rrtt_est",
        "_rtt_seq",
        "_rtt_time",
        "_rx_since_rto",
        "_sack_ok",
        "_smss",
        "_snd_wl1",
        "_snd_wl2",
        "_snd_ws",
        "_synack_due",
        "_synack_retries",
        "_synack_sent_at",
        "_timer",
        "_timer_at",
        "_tlp_at",
        "_tlp_due",
        "_tlp_out",
        "_ts_offset",
        "_ts_ok",
        "_ts_recent",
        "_tuner",
        "_undo_armed",
        "_undo_from",
        "_undo_retrans",
        "_undo_ts",
        "_ws_ok",
        "accepted",
        "cc",
        "config",
        "counters",
        "drops",
        "iss",
        "key",
        "local_mss",
        "mss",
        "rcv_adv",
        "rcv_nxt",
        "recovery",
        "rtt",
        "rx",
        "snd_max",
        "snd_nxt",
        "snd_una",
        "snd_wnd",
        "state",
        "syn",
        "tx",
        "__dict__",
    )

    def __init__(
        self,
        syn: TcpSegment,
        config: TcpConfig,
        *,
        now: float,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        flags = int(syn.flags)
        if not flags & _SYN or flags & (_ACK | _RST):
            raise ConfigError("TcpConnection needs the client's bare SYN (SYN without ACK/RST)")
        self.config = config
        #: the SYN that created us (the stack quotes it in ICMP errors).
        self.syn = syn
        #: (peer_addr, peer_port, local_addr, local_port), as the stack keys flows.
        self.key: tuple[IPAddress, int, IPAddress, int] = (syn.src, syn.sport, syn.dst, syn.dport)
        self._local = syn.dst
        self._peer = syn.src
        self._lport = syn.dport
        self._pport = syn.sport
        self.drops = DropCounter()
        self.state = State.SYN_RECEIVED
        #: True once accept() queued our SYN-ACK.
        self.accepted = False
        #: events for the shell, oldest first (a few at most: a list is ~700 B smaller than a deque).
        self._events: list[TcpEvent] = []

        # --- options negotiated from the SYN -----------------------------------------
        v6 = syn.src.version == 6
        hdr = IPV6_HEADER_SIZE if v6 else IPV4_HEADER_SIZE
        #: MSS we advertise: what the tunnel MTU lets us receive.
        self.local_mss = config.mtu - hdr - TCP_HEADER_SIZE
        peer_mss = syn.mss if syn.mss else (DEFAULT_MSS_IPV6 if v6 else DEFAULT_MSS_IPV4)
        #: MSS for our segments: peer's, clamped to the tunnel MTU (payload + options <= mss).
        self.mss = max(min(peer_mss, self.local_mss), MIN_MSS)
        self._ts_ok = config.timestamps and syn.ts_val is not None
        self._sack_ok = config.sack and syn.sack_permitted
        self._ws_ok = config.window_scale and syn.wscale is not None
        #: shift applied to windows the peer advertises (0 without scaling).
        self._snd_ws = min(syn.wscale or 0, 14) if self._ws_ok else 0
        #: shift applied to windows we advertise (0 without scaling): always the one the
        #: largest buffer needs, so the window can grow later (RFC 7323 §2.2).
        self._rcv_ws = _window_shift(config.rcv_buffer) if self._ws_ok else 0
        #: payload bytes in a full-sized segment we send (MSS minus fixed options).
        self._smss = self.mss - (TS_OPTION_LEN if self._ts_ok else 0)

        isn = int.from_bytes(rng(4), "big")
        #: TSval = ms clock + this per-connection random offset (RFC 7323 §7.1).
        self._ts_offset = int.from_bytes(rng(4), "big") if self._ts_ok else 0
        #: most recent peer TSval to echo (TS.Recent), None without timestamps.
        self._ts_recent: int | None = syn.ts_val if self._ts_ok else None

        # --- send side ------------------------------------------------------------------
        #: our initial sequence number (the SYN-ACK's seq).
        self.iss = isn
        #: oldest unacknowledged seq; == iss until our SYN is acked, then tx[0] is at snd_una.
        self.snd_una = isn
        #: next new seq to send; == snd_max (retransmissions do not move it; kept for
        #: introspection and RFC vocabulary).
        self.snd_nxt = isn
        #: highest seq ever sent + 1; ACKs beyond it acknowledge unsent data.
        self.snd_max = isn
        #: unacked + unsent host bytes; tx[0] is at snd_una (iss+1 before the SYN is acked).
        #: Doubles as the retransmit queue's bytes. len(tx) <= snd_buffer.
        self.tx = SendBuffer()
        #: peer's receive window in bytes (scaled), counted from snd_una.
        self.snd_wnd = syn.window
        self._snd_wl1 = syn.seq  # seq of the segment that last updated snd_wnd
        self._snd_wl2 = isn  # ack of that segment
        #: seq of our FIN once the host closed (= end of all host data); None before.
        self._fin_seq: int | None = None
        #: host called close() (possibly before establishment).
        self._host_closed = False

        #: in-flight bookkeeping in stream offsets (offset 0 = seq iss + 1).
        self._q = SentQueue()
        #: congestion controller (bytes).
        self.cc = make_congestion_control(config.congestion, mss=self._smss)
        #: loss recovery state: OPEN, RECOVERY (fast/SACK recovery with PRR) or LOSS (after RTO).
        self.recovery = Recovery.OPEN
        self._prr: Prr | None = None
        #: offset that ends the current recovery (snd_max when it began).
        self._recovery_point = 0
        self._dupacks = 0  # duplicate ACKs in a row (peers without SACK)
        #: undo bookkeeping for the last congestion event (RFC 3522 / RFC 3708).
        self._undo_armed = False
        self._undo_ts: int | None = None  # TSval of its first retransmission
        self._undo_from = 0  # offset of the first record it retransmitted
        self._undo_retrans = 0  # its retransmitted segments not yet reported as duplicates
        #: tail loss probe (RFC 8985 §7): deadline, and a probe waits to go out.
        self._tlp_at: float | None = None
        self._tlp_due = False
        self._tlp_out = False  # a probe is unanswered: no second one
        #: F-RTO (RFC 5682) stage after an RTO without timestamps: 0 off, 1 waiting for
        #: the first ACK, 2 new segments sent, waiting for the second; and how many new
        #: segments step 2 may send regardless of cwnd.
        self._frto = 0
        self._frto_new = 0
        #: RACK reordering timer (RFC 8985 §6.3).
        self._reo_at: float | None = None
        #: pacing: bucket content (bytes, may dip below 0 by one segment), its time, and
        #: when the next paced send is due (None: not pacing-limited).
        self._pace_tokens = 0.0
        self._pace_t = now
        self._pace_at: float | None = None
        #: the last send ended pacing-limited (data was due, tokens were not): the time
        #: until the next send then counts fully (up to PACE_LATE_CREDIT_TIME).
        self._pace_limited = False
        #: the sender was limited by cwnd the last time it sent (else app/peer limited).
        self._cwnd_limited = False
        self.rtt = RttEstimator(initial_rto=config.initial_rto, min_rto=config.min_rto, max_rto=config.max_rto)
        self._rtt_seq: int | None = None  # Karn: ack >= this completes the timed segment
        self._rtt_time = 0.0
        self._retransmits = 0  # consecutive RTOs without progress
        self._rx_since_rto = False  # the peer answered since the last RTO
        self._synack_sent_at: float | None = None
        self._synack_retries = 0
        self._synack_due = False
        self._probe_due = False
        self._probes = 0  # zero-window probes without any answer
        self._persist_backoff = 0
        #: event counts for the stats line.
        self.counters = TcpCounters()

        # --- receive side ---------------------------------------------------------------
        #: next seq expected from the peer.
        self.rcv_nxt = (syn.seq + 1) & MASK
        #: in-order peer bytes not yet read by the host; len(rx) < rcv_buffer + 2**rcv_ws.
        self.rx = bytearray()
        #: right edge of the window we advertised; never moves left.
        self.rcv_adv = self.rcv_nxt
        #: grows the receive buffer with the host's consumption (never shrinks).
        self._tuner = ReceiveBufferTuner(
            mss=self.local_mss, initial=min(RCV_BUFFER_INITIAL, config.rcv_buffer), maximum=config.rcv_buffer
        )
        #: TSecr of the last receiver RTT sample; without timestamps the estimator.
        self._rrtt_ecr = 0
        self._rrtt_est: ReceiverRttEstimator | None = None
        #: bytes the host took out with read() (monotonic, for the tuner).
        self._consumed = 0
        self._consumed_fed = 0
        #: largest window the field can express (65535 without window scaling).
        self._rcv_field_max = 0xFFFF << self._rcv_ws
        #: stream offset of rcv_nxt (monotonic; offset 0 = the peer's first data byte).
        self._rcv_off = 0
        #: out-of-order data (stream offsets); created on the first hole, so idle flows
        #: cost nothing.
        self._ooo: ReassemblyQueue | None = None
        #: a duplicate [left, right) to report first in our next SACK option (RFC 2883).
        self._dsack: tuple[int, int] | None = None
        self._rcv_fin_seq: int | None = None  # seq of an out-of-order FIN
        self._fin_received = False
        self._last_ack_sent = self.rcv_nxt
        self._rcv_unacked = 0  # in-order bytes received since our last ACK
        self._rcv_seg_max = 1  # largest payload seen: "full-sized" for the delayed ACK
        self._ack_now = False
        self._ack_at: float | None = None  # delayed-ACK deadline
        self._challenge_start = 0.0
        self._challenge_count = 0

        # --- timers ---------------------------------------------------------------------
        self._timer = Timer.NONE
        self._timer_at: float | None = None
        self._last_rx = now
        self._last_activity = now
        #: control segments built at event time (RSTs), emitted first.
        self._ctl: list[TcpSegment] = []

    @classmethod
    def connect(
        cls,
        *,
        local: IPAddress,
        lport: int,
        peer: IPAddress,
        pport: int,
        config: TcpConfig,
        now: float,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> TcpConnection:
        """Active open (RFC 9293 §3.10.1): a connection in SYN-SENT whose SYN is due.

        Options are offered as the config allows and settled by the peer's SYN-ACK.
        ``key`` and :attr:`syn` describe the flow as if ``peer`` had sent a SYN.
        """
        tmpl = TcpSegment(
            src=peer,
            dst=local,
            sport=pport,
            dport=lport,
            seq=0,
            ack=0,
            flags=TcpFlags.SYN,
            window=0xFFFF,
            wscale=0,
            sack_permitted=True,
            ts_val=0,
        )
        conn = cls(tmpl, config, now=now, rng=rng)
        conn.state = State.SYN_SENT
        conn.accepted = True
        conn._synack_due = True
        conn._ts_recent = None
        conn.snd_nxt = conn.snd_max = (conn.iss + 1) & MASK
        conn._arm_timer(now)
        return conn

    # ------------------------------------------------------------------------------------
    # Introspection

    @property
    def is_closed(self) -> bool:
        return self.state is State.CLOSED

    def accepts(self, seg: TcpSegment) -> bool:
        """True if ``seg`` belongs to this flow (its 4-tuple matches)."""
        return (
            seg.src == self._peer and seg.sport == self._pport and seg.dst == self._local and seg.dport == self._lport
        )

    def can_reopen(self, syn: TcpSegment) -> bool:
        """True if ``syn`` may replace this flow at once (RFC 1122 4.2.2.13 / RFC 6191).

        Only in TIME-WAIT (or CLOSED), for a bare SYN whose sequence number (or timestamp)
        is beyond what this incarnation used.
        """
        if self.state is State.CLOSED:
            return True
        if self.state is not State.TIME_WAIT or int(syn.flags) & (_ACK | _RST) or not int(syn.flags) & _SYN:
            return False
        if self._ts_recent is not None and syn.ts_val is not None:
            return seq_gt(syn.ts_val, self._ts_recent)
        return seq_gt(syn.seq, self.rcv_nxt)

    @property
    def send_space(self) -> int:
        if self.state not in _HOST_SENDING or self._host_closed:
            return 0
        return max(self._snd_buffer_target() - len(self.tx), 0)

    def _snd_buffer_target(self) -> int:
        """Send buffer size now: 2 x cwnd (one window in flight, one ready), and at least
        one cwnd beyond what is outstanding (SACKed data behind a hole stays buffered
        until the hole is filled: it must not starve new data); at least SND_BUFFER_MIN,
        at most snd_buffer."""
        cwnd = self.cc.cwnd
        t = self._q.outstanding + cwnd
        if t < 2 * cwnd:
            t = 2 * cwnd
        if t < SND_BUFFER_MIN:
            t = SND_BUFFER_MIN
        cap = self.config.snd_buffer
        return t if t < cap else cap

    @property
    def cwnd(self) -> int:
        return self.cc.cwnd

    @property
    def ssthresh(self) -> int:
        return self.cc.ssthresh

    @property
    def readable(self) -> int:
        return len(self.rx)

    @property
    def peer_eof(self) -> bool:
        return self._fin_received and not self.rx

    def next_event(self) -> TcpEvent | None:
        return self._events.pop(0) if self._events else None

    def next_deadline(self) -> float | None:
        d = self._timer_at
        for a in (self._ack_at, self._tlp_at, self._reo_at, self._pace_at):
            if a is not None and (d is None or a < d):
                d = a
        return d

    # ------------------------------------------------------------------------------------
    # Host side

    def accept(self, *, now: float) -> None:
        """The host connection is up: queue our SYN-ACK."""
        if self.state is State.CLOSED:
            return  # the peer gave up (RST) while the shell was dialling
        if self.state is not State.SYN_RECEIVED or self.accepted:
            raise ConfigError("accept() called twice")
        self.accepted = True
        self._synack_due = True
        self.snd_nxt = self.snd_max = (self.iss + 1) & MASK
        self._last_activity = now
        self._arm_timer(now)

    def refuse(self) -> None:
        """The dial failed: answer the SYN with RST|ACK and close."""
        if self.state is State.CLOSED:
            return
        if self.state is not State.SYN_RECEIVED or self.accepted:
            raise ConfigError("refuse() is only valid before accept()")
        self._ctl.append(self._build_rst(0, _F_RST_ACK, self.rcv_nxt))
        self._set_closed()

    def send(self, data: bytes | memoryview, *, now: float) -> int:
        """Queue host bytes for the peer; returns how many were taken (<= send_space)."""
        if self.state is State.CLOSED:
            return 0  # the flow died under the host reader (peer RST, timeout)
        if self._host_closed:
            raise ConfigError("send() after close()")
        if not self.accepted:
            raise ConfigError("send() before accept()")
        space = self._snd_buffer_target() - len(self.tx)
        n = len(data)
        if n > space:
            n = space
        if n <= 0:
            return 0
        self.tx.append(data[:n])
        self._last_activity = now
        self._arm_timer(now)  # e.g. the persist timer when the peer's window is zero
        return n

    def read(self, max_bytes: int | None = None) -> bytes:
        """Take in-order peer bytes for the host; may queue a window-update ACK."""
        rx = self.rx
        n = len(rx) if max_bytes is None else min(max_bytes, len(rx))
        if n <= 0:
            return b""
        data = bytes(rx[:n])
        del rx[:n]
        self._consumed += n
        if self.state in _RECEIVING and not self._fin_received:
            # Window update on read, coalesced (Linux tcp_cleanup_rbuf): only when the
            # window the peer still has is at most half of what we could offer and the
            # read at least doubles it (and by more than the SWS threshold, RFC 1122
            # 4.2.3.3). Otherwise the peer is not held back, and the ACK its next data
            # elicits carries the new edge: one pure ACK per burst instead of two.
            left = (self.rcv_adv - self.rcv_nxt) & MASK
            if left >= HALF:
                left = 0
            if 2 * left <= self._rcv_cap:
                grow = self._window_growth()
                if grow >= self._sws_threshold() and grow >= left:
                    self._ack_now = True  # the peer may be waiting on us
        return data

    def close(self, *, now: float) -> None:
        """Host EOF: send FIN after all queued data (idempotent)."""
        st = self.state
        if self._host_closed or st is State.CLOSED:
            return
        if st is State.SYN_RECEIVED and not self.accepted:
            raise ConfigError("close() before accept(); use refuse()")
        self._host_closed = True
        if st is State.SYN_RECEIVED or st is State.SYN_SENT:
            # FIN follows once established (RFC 9293 §3.10.4: queue until ESTABLISHED).
            self._fin_seq = (self.iss + 1 + len(self.tx)) & MASK
            return
        self._fin_seq = (self.snd_una + len(self.tx)) & MASK
        if st is State.ESTABLISHED:
            self.state = State.FIN_WAIT_1
        elif st is State.CLOSE_WAIT:
            self.state = State.LAST_ACK
        self._arm_timer(now)

    def abort(self) -> None:
        """Send RST and close (host reset, shutdown). No-op once closed."""
        st = self.state
        if st is State.CLOSED:
            return
        if st is State.SYN_RECEIVED and not self.accepted:
            self._ctl.append(self._build_rst(0, _F_RST_ACK, self.rcv_nxt))
        elif st is not State.TIME_WAIT and st is not State.SYN_SENT:
            self._ctl.append(self._build_rst(self.snd_max, _F_RST_ACK, self.rcv_nxt))
        self._set_closed()

    def peer_unreachable(self) -> bool:
        """An ICMP destination unreachable quoting our SYN arrived (active open only):
        in SYN-SENT the connection fails as if reset (RFC 1122 §4.2.3.9; Linux aborts a
        connect on any unreachable but "fragmentation needed"). True if it closed us;
        in every other state the error is soft and ignored (RFC 5461)."""
        if self.state is not State.SYN_SENT:
            return False
        self._events.append(PeerReset())
        self._set_closed()
        return True

    # ------------------------------------------------------------------------------------
    # Network side: input

    def handle_segment(self, seg: TcpSegment, *, now: float) -> None:
        """Process one segment of this flow from the peer. Never raises on bad input."""
        try:
            st = self.state
            f = int(seg.flags)
            if st is State.CLOSED:
                if not f & _RST:
                    self._ctl.append(self._rst_reply(seg))
                raise _Drop(DropReason.TCP_BAD_STATE, "closed")
            if st is State.SYN_RECEIVED and not self._on_syn_received(seg, f, now):
                return
            if st is State.SYN_SENT:
                self._on_syn_sent(seg, f, now)
                return
            self._on_synchronized(seg, f, now)
        except _Drop as drop:
            self.drops.add(drop.reason)
        self._arm_timer(now)

    def _on_syn_sent(self, seg: TcpSegment, f: int, now: float) -> None:
        """SYN-SENT input (RFC 9293 §3.10.7.3): only our SYN-ACK establishes us."""
        if f & _ACK and seg.ack != self.snd_max:
            if not f & _RST:
                self._ctl.append(self._build_rst(seg.ack, _F_RST, 0))
            raise _Drop(DropReason.TCP_BAD_ACK, "syn-sent")
        if f & _RST:
            if f & _ACK:
                self._on_reset()
                return
            raise _Drop(DropReason.TCP_OUT_OF_WINDOW, "rst in syn-sent")
        if not f & _SYN or not f & _ACK:
            raise _Drop(DropReason.TCP_BAD_STATE, "syn-sent needs a syn-ack")  # no simultaneous open
        cfg = self.config
        # Options: what both offered (RFC 7323 §1.3, RFC 2018 §2).
        self._ts_ok = cfg.timestamps and seg.ts_val is not None
        self._sack_ok = cfg.sack and seg.sack_permitted
        self._ws_ok = cfg.window_scale and seg.wscale is not None
        self._snd_ws = min(seg.wscale or 0, 14) if self._ws_ok else 0
        self._rcv_ws = _window_shift(cfg.rcv_buffer) if self._ws_ok else 0
        self._rcv_field_max = 0xFFFF << self._rcv_ws
        v6 = self._peer.version == 6
        peer_mss = seg.mss if seg.mss else (DEFAULT_MSS_IPV6 if v6 else DEFAULT_MSS_IPV4)
        self.mss = max(min(peer_mss, self.local_mss), MIN_MSS)
        self._smss = self.mss - (TS_OPTION_LEN if self._ts_ok else 0)
        self.cc = make_congestion_control(cfg.congestion, mss=self._smss)
        self._ts_recent = seg.ts_val if self._ts_ok else None
        self.rcv_nxt = self.rcv_adv = self._last_ack_sent = (seg.seq + 1) & MASK
        self.snd_una = self.snd_nxt = self.snd_max
        self.snd_wnd = seg.window  # never scaled in a SYN
        self._snd_wl1 = seg.seq
        self._snd_wl2 = seg.ack
        if self._synack_retries == 0 and self._synack_sent_at is not None:
            self.rtt.sample(now - self._synack_sent_at)
            self._tuner.on_rtt_sample(now - self._synack_sent_at, window_based=True)
        self._timer = Timer.NONE
        self._synack_due = False
        self._ack_now = True
        self._last_rx = self._last_activity = now
        self.state = State.FIN_WAIT_1 if self._host_closed else State.ESTABLISHED

    def _on_syn_received(self, seg: TcpSegment, f: int, now: float) -> bool:
        """SYN-RECEIVED input; True when the segment established us and should go on."""
        if f & _RST:
            if seg.seq == self.rcv_nxt:
                self._on_reset()
                return False
            raise _Drop(DropReason.TCP_OUT_OF_WINDOW, "rst in syn-received")
        if f & _SYN:
            if not f & _ACK and seg.seq == self.syn.seq:
                # The client retransmitted its SYN: absorb it while the dial is pending,
                # answer again once our SYN-ACK exists.
                if self.accepted:
                    self._synack_due = True
                raise _Drop(DropReason.TCP_DUPLICATE_SYN)
            raise _Drop(DropReason.TCP_BAD_STATE, "other syn in syn-received")
        if not self.accepted or not f & _ACK:
            raise _Drop(DropReason.TCP_BAD_STATE, "no ack of our syn-ack")
        if seg.ack != self.snd_max:
            # RFC 9293 §3.10.7.4: unacceptable ACK in SYN-RECEIVED -> <SEQ=SEG.ACK><CTL=RST>.
            self._ctl.append(self._build_rst(seg.ack, _F_RST, 0))
            raise _Drop(DropReason.TCP_BAD_ACK, "syn-received")
        off = (seg.seq - self.rcv_nxt) & MASK
        if off >= (self.rcv_adv - self.rcv_nxt) & MASK and off != 0:
            self._synack_due = True
            raise _Drop(DropReason.TCP_OUT_OF_WINDOW, "syn-received")
        # Established: our SYN is acknowledged.
        self.snd_una = self.snd_nxt = self.snd_max
        self.snd_wnd = seg.window << self._snd_ws
        self._snd_wl1 = seg.seq
        self._snd_wl2 = seg.ack
        if self._synack_retries == 0 and self._synack_sent_at is not None and not self._ts_ok:
            self.rtt.sample(now - self._synack_sent_at)  # Karn: only if never retransmitted
        elif self._ts_ok and seg.ts_ecr is not None:
            self._rtt_sample_ts(seg.ts_ecr, now)
        if self.rtt.srtt is not None:
            # until data brings receiver-side samples (an overestimate is kept as a minimum)
            self._tuner.on_rtt_sample(self.rtt.srtt, window_based=True)
        self._timer = Timer.NONE
        self._synack_due = self._ack_now = False
        self.state = State.FIN_WAIT_1 if self._host_closed else State.ESTABLISHED
        return True

    def _on_synchronized(self, seg: TcpSegment, f: int, now: float) -> None:
        rcv_nxt = self.rcv_nxt
        seq = seg.seq
        off = (seq - rcv_nxt) & MASK
        if off >= HALF:
            off -= MOD
        wnd = (self.rcv_adv - rcv_nxt) & MASK
        if wnd >= HALF:
            wnd = 0
        st = self.state

        # RFC 5961 §3.2: only an exact RST resets; in-window ones get a challenge ACK.
        if f & _RST:
            if off == 0:
                self._on_reset()
                return
            if 0 < off < max(wnd, 1):
                self._challenge_ack(now)
            raise _Drop(DropReason.TCP_OUT_OF_WINDOW, "rst")
        # RFC 5961 §4.2: any SYN in a synchronized state gets a challenge ACK.
        if f & _SYN:
            self._challenge_ack(now)
            raise _Drop(DropReason.TCP_DUPLICATE_SYN if seq == self.syn.seq else DropReason.TCP_BAD_STATE, "syn")

        payload = seg.payload
        plen = len(payload)
        fin = f & _FIN
        seglen = plen + 1 if fin else plen

        ts_val = seg.ts_val
        if self._ts_ok and ts_val is not None:
            recent = self._ts_recent
            if recent is not None and ((ts_val - recent) & MASK) >= HALF:
                self._ack_now = True  # PAWS (simple form, see module docstring)
                raise _Drop(DropReason.TCP_OUT_OF_WINDOW, "paws")

        # RFC 9293 §3.10.7.4 acceptance test (zero window: ACK/RST/FIN-only still accepted).
        if seglen == 0:
            ok = off == 0 if wnd == 0 else 0 <= off < wnd
            if not ok and off < 0:
                # Like Linux (RCV.WUP): an empty segment from before our last ACK's
                # point is a reordered ACK, not a duplicate; take its ACK field.
                ok = -off <= ((rcv_nxt - self._last_ack_sent) & MASK)
        elif wnd == 0:
            ok = off == 0
        else:
            ok = off < wnd and off + seglen > 0
        if not ok:
            self._ack_now = True
            if off == -1 and plen <= 1 and not fin:
                # RFC 1122 4.2.3.6 keep-alive (SEG.SEQ = RCV.NXT - 1): the peer is alive.
                # ACK it (above) and restart the idle timer; not a drop.
                self._last_rx = self._last_activity = now
                return
            if plen and off < 0 and off + seglen <= 0 and self._sack_ok:
                self._dsack = (seq, (seq + plen) & MASK)  # RFC 2883 §4: report the duplicate
            if st is State.TIME_WAIT and fin:
                self._enter_time_wait(now)  # retransmitted FIN: re-ACK, restart 2MSL
            raise _Drop(DropReason.TCP_OUT_OF_WINDOW)

        self._last_rx = self._last_activity = now
        self._rx_since_rto = True
        self._probes = 0
        if ts_val is not None and self._ts_ok and ((self._last_ack_sent - seq) & MASK) < HALF:
            self._ts_recent = ts_val  # RFC 7323 §4.3: SEG.SEQ <= Last.ACK.sent

        if not f & _ACK:
            raise _Drop(DropReason.TCP_BAD_STATE, "no ack")
        if off == 0 and plen >= self._rcv_seg_max and seg.ts_ecr and self._ts_ok and seg.ts_ecr != self._rrtt_ecr:
            # receiver-side RTT for the window tuner (Linux tcp_rcv_rtt_measure_ts)
            self._rrtt_ecr = seg.ts_ecr
            rrtt = self._ts_age(seg.ts_ecr, now)
            if rrtt is not None:
                self._tuner.on_rtt_sample(rrtt)
        self._on_ack(seg, f, plen, now)
        if self.state is State.CLOSED:
            return
        if seglen and self.state in _RECEIVING:
            self._on_data(seq, off, wnd, payload, fin, now)

    def _on_ack(self, seg: TcpSegment, f: int, plen: int, now: float) -> None:
        ack = seg.ack
        una = self.snd_una
        acked = (ack - una) & MASK
        if acked > ((self.snd_max - una) & MASK):
            if acked >= HALF:
                return  # old duplicate ACK: ignore the field (RFC 9293), keep the text
            self._ack_now = True
            raise _Drop(DropReason.TCP_BAD_ACK, "acks unsent data")
        wnd = seg.window << self._snd_ws
        blocks = seg.sack_blocks if self._sack_ok else ()
        if acked or blocks:
            self._on_ack_progress(ack, acked, blocks, seg.ts_ecr, now)
            if self.state is State.CLOSED:
                return
        elif self.snd_max != una and plen == 0 and not f & _FIN and wnd == self.snd_wnd:
            self._on_dup_ack(now)  # RFC 5681 duplicate ACK without SACK information
        seq = seg.seq
        wl1 = self._snd_wl1
        if (wl1 == seq and ((ack - self._snd_wl2) & MASK) < HALF) or ((wl1 - seq) & MASK) >= HALF:
            self.snd_wnd = wnd
            self._snd_wl1 = seq
            self._snd_wl2 = ack
            if wnd:
                self._persist_backoff = 0

    def _sack_offsets(self, blocks: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
        """SACK block edges (sequence numbers) as stream offsets relative to snd_una."""
        una_seq = self.snd_una
        una = self._q.una
        return [(una + seq_diff(left, una_seq), una + seq_diff(right, una_seq)) for left, right in blocks]

    def _on_ack_progress(
        self, ack: int, acked: int, blocks: tuple[tuple[int, int], ...], ts_ecr: int | None, now: float
    ) -> None:
        """An ACK that moves snd_una and/or carries SACK blocks: scoreboard, RACK, undo, cc."""
        q = self._q
        rtt = self.rtt
        new_una = q.una + acked
        res = q.on_ack(new_una, self._sack_offsets(blocks) if blocks else [], now=now, min_rtt=rtt.min_rtt)
        sample = None
        if acked:
            sample = self._on_new_ack(ack, acked, ts_ecr, now, res.rtt)
            if self.state is State.CLOSED:
                return
            self._tlp_out = False
        elif res.delivered:
            self._tlp_out = False
            if res.rtt is not None:
                sample = res.rtt
                rtt.sample(sample)  # a SACK-only ACK measures too (Linux: sack_rtt)
        if res.dsack is not None:
            # RFC 2883 / RFC 3708: the peer got something twice; widen RACK's reo_wnd and
            # undo once every retransmission of the episode proved needless.
            self.counters.dsack_received += 1
            q.rack.on_dsack(una=q.una, snd_max=q.snd_max)
            if res.dsack_retransmitted and self._undo_armed:
                self._undo_retrans -= 1
                if self._undo_retrans <= 0:
                    self._undo(now)
        if (
            acked
            and self._undo_armed
            and self._undo_ts is not None
            and ts_ecr is not None
            and self.recovery is not Recovery.OPEN
            and q.una > self._undo_from
            and seq_lt(ts_ecr, self._undo_ts)
        ):
            # Eifel (RFC 3522): this ACK echoes a TSval older than our first retransmission,
            # so the original got through: the loss episode was spurious (RFC 4015 response).
            self._undo(now)
        if self._frto:
            self._frto_step(acked, q.una < self._recovery_point, now)
        rec = self.recovery
        if self._sack_ok:
            self._rack_detect(now)
        elif rec is Recovery.RECOVERY and acked and q.una < self._recovery_point:
            head = q.head_record()  # NewReno partial ACK (RFC 6582 §3.2 step 4)
            if head is not None:
                q.mark_lost(head)
        if self.recovery is not rec and self.recovery is Recovery.RECOVERY:
            # just entered: PRR counts this ACK too (RFC 6937 §3.1), the first
            # retransmission goes out in any case
            prr = self._prr
            assert prr is not None
            prr.on_ack(delivered=res.delivered, pipe=q.pipe)
            if prr.sndcnt < self._smss:
                prr.sndcnt = self._smss
            return
        rec = self.recovery
        grow = res.delivered > 0
        if rec is Recovery.RECOVERY:
            if q.una < self._recovery_point:
                assert self._prr is not None
                if grow and self.cc.ack_in_recovery:
                    # a model-based controller keeps measuring through recovery; PRR then
                    # sizes sending towards the window it keeps
                    self._cc_on_ack(res.delivered, sample, now)
                    self._prr.ssthresh = self.cc.ssthresh
                self._prr.on_ack(delivered=res.delivered, pipe=q.pipe)
                return
            self._exit_recovery(now)  # cwnd = ssthresh; growth resumes with the next ACK
            grow = False
        elif rec is Recovery.LOSS and q.una >= self._recovery_point:
            self.recovery = Recovery.OPEN
            self.cc.on_recovery_end(now=now)
        if grow:
            self._cc_on_ack(res.delivered, sample, now)
        if self.recovery is Recovery.OPEN and self._sack_ok and not self._tlp_out and q.outstanding:
            self._tlp_at = now + probe_timeout(srtt=rtt.srtt, flight_segments=q.pipe // self._smss, rto=rtt.rto)

    def _frto_step(self, acked: int, partial: bool, now: float) -> None:
        """F-RTO (RFC 5682 §2/§4) after an RTO without timestamps.

        Step 2: the first ACK after the retransmission advances the window (a partial ACK)
        -> send two *new* segments instead of retransmitting more. Step 3: the next ACK
        advances the window again -> the originals got through, the RTO was spurious:
        undo. A duplicate ACK at either step means real loss: conventional recovery.
        """
        if self.recovery is not Recovery.LOSS:
            self._frto = 0
            return
        advanced = acked > 0 and partial
        if self._frto == 1:
            unsent = len(self.tx) + (1 if self._fin_seq is not None else 0) - self._q.outstanding
            if advanced and unsent > 0:
                self._frto = 2
                self._frto_new = 2
            else:
                self._frto = 0
        else:
            self._frto = 0
            self._frto_new = 0
            if advanced:
                self._undo(now)

    def _cc_on_ack(self, delivered: int, sample: float | None, now: float) -> None:
        q = self._q
        self.cc.on_ack(
            acked=delivered,
            delivered=q.delivered,
            snd_max=q.snd_max,
            in_flight=q.pipe,
            rtt=sample,
            min_rtt=self.rtt.min_rtt,
            app_limited=not self._cwnd_limited,
            # net of losses shown spurious (undo, D-SACK): reordering is not loss
            lost=max(q.lost_total - q.spurious_lost, 0),
            now=now,
        )

    def _on_new_ack(
        self, ack: int, acked: int, ts_ecr: int | None, now: float, precise: float | None = None
    ) -> float | None:
        """snd_una moves to ``ack``: free the bytes, sample the RTT, advance the state."""
        data = acked
        fin_acked = False
        fin_seq = self._fin_seq
        if fin_seq is not None and seq_gt(ack, fin_seq):
            fin_acked = True
            data -= 1
        if data:
            self.tx.consume(data)
        self.snd_una = ack
        sample = None
        if precise is not None:
            # the send time of a never-retransmitted segment: finer than timestamps' 1 ms,
            # which matters for min_rtt (RACK's reo_wnd, a model-based controller's BDP)
            sample = precise
            self.rtt.sample(sample)
            self._rtt_seq = None
        elif self._ts_ok and ts_ecr is not None:
            sample = self._rtt_sample_ts(ts_ecr, now)
        elif self._rtt_seq is not None and seq_ge(ack, self._rtt_seq):
            sample = now - self._rtt_time
            self.rtt.sample(sample)
            self._rtt_seq = None
        self._retransmits = 0
        self._dupacks = 0
        self._timer = Timer.NONE  # RFC 6298 §5.3: restart the timer on new data acked
        if fin_acked:
            st = self.state
            if st is State.FIN_WAIT_1:
                self.state = State.FIN_WAIT_2
            elif st is State.CLOSING:
                self._enter_time_wait(now)
            elif st is State.LAST_ACK:
                self._set_closed()
        return sample

    def _on_dup_ack(self, now: float) -> None:
        """A duplicate ACK from a peer that sends no SACK blocks (RFC 5681 §3.2, RFC 6582)."""
        self._dupacks += 1
        q = self._q
        q.on_dup_ack_reno(self._smss)  # pipe shrinks: limited transmit (RFC 3042)
        if self.recovery is Recovery.RECOVERY:
            assert self._prr is not None
            self._prr.on_ack(delivered=self._smss, pipe=q.pipe)
        elif self.recovery is Recovery.OPEN and self._dupacks >= DUP_THRESH:
            head = q.head_record()
            if head is not None and q.mark_lost(head):
                self._enter_recovery(now)

    def _rack_detect(self, now: float) -> None:
        """RFC 8985 §6.2: mark overdue segments lost; start recovery on the first loss."""
        q = self._q
        rtt = self.rtt
        reo = q.rack.reo_wnd(
            in_recovery=self.recovery is not Recovery.OPEN,
            sacked_segments=q.sacked_out // self._smss,
            min_rtt=rtt.min_rtt,
            srtt=rtt.srtt,
        )
        marked, self._reo_at = q.detect_loss(now, reo)
        if marked and self.recovery is Recovery.OPEN:
            self._enter_recovery(now)

    def _enter_recovery(self, now: float) -> None:
        """Fast / SACK loss recovery (RFC 6675 §5) with PRR (RFC 6937)."""
        q = self._q
        cc = self.cc
        cc.on_congestion_event(in_flight=min(q.outstanding, cc.cwnd), now=now)
        self.recovery = Recovery.RECOVERY
        self._prr = Prr(ssthresh=cc.ssthresh, pipe=q.pipe, mss=self._smss)
        self._recovery_point = q.snd_max
        self.counters.fast_recovery += 1
        self._arm_undo()
        self._tlp_at = None
        self._rtt_seq = None

    def _exit_recovery(self, now: float) -> None:
        self.cc.on_recovery_end(now=now)
        self._prr = None
        self.recovery = Recovery.OPEN
        self._q.rack.on_recovery_exit()

    def _arm_undo(self) -> None:
        """A congestion event began: remember what undoing it needs."""
        self._undo_armed = True
        self._undo_ts = None
        self._undo_from = 0
        self._undo_retrans = 0

    def _undo(self, now: float) -> None:
        """The last congestion event was spurious: restore the window, forget the losses."""
        self._undo_armed = False
        self.cc.undo(now=now)
        self.counters.spurious_undone += 1
        if self.recovery is not Recovery.OPEN:
            self._q.unmark_lost()
            self._prr = None
            self.recovery = Recovery.OPEN
        rack = self._q.rack
        rack.reordering_seen = True
        # Forget RACK's reference segment: it was delivered out of order (the cause of the
        # spurious episode) and would mark every older segment lost again at once.
        rack.xmit_ts = None
        self._retransmits = 0

    def _on_data(self, seq: int, off: int, wnd: int, payload: bytes, fin: int, now: float) -> None:
        if off < 0:
            if self._sack_ok and payload:
                self._dsack = (seq, self.rcv_nxt)  # RFC 2883: the front was a duplicate
            payload = payload[-off:]  # already have the front (FIN-only remains if it was all old)
            seq = self.rcv_nxt
            off = 0
        room = wnd - off
        if len(payload) > room:
            payload = payload[: max(room, 0)]
            fin = 0  # the FIN lies beyond what we can take
            self._ack_now = True
        if off:
            if payload:
                q = self._ooo
                if q is None:
                    q = self._ooo = ReassemblyQueue(
                        max_blocks=OOO_MAX_BLOCKS, max_bytes=self.config.rcv_buffer + OOO_SLACK
                    )
                res = q.insert(self._rcv_off + off, payload)
                if not res.accepted:
                    self.drops.add(DropReason.TCP_REASSEMBLY_FULL)
                dup = res.duplicate
                if dup is not None and self._sack_ok:
                    self._dsack = self._seq_range(dup)  # RFC 2883: we already held this
            if fin:
                self._rcv_fin_seq = (seq + len(payload)) & MASK
            self._ack_now = True  # RFC 5681 §4.2: out-of-order -> immediate (dup) ACK
            return
        n = len(payload)
        if n:
            self.rx += payload
            self.rcv_nxt = (self.rcv_nxt + n) & MASK
            self._rcv_off += n
            q = self._ooo
            if q is not None and q.blocks:
                # filled (part of) a hole: take what is now contiguous, ACK at once
                # (RFC 5681 §4.2)
                rx = self.rx
                got = 0
                for chunk in q.pop_ready(self._rcv_off):
                    rx += chunk
                    got += len(chunk)
                if got:
                    self._rcv_off += got
                    self.rcv_nxt = (self.rcv_nxt + got) & MASK
                self._ack_now = True
            else:
                self._rcv_unacked += n
                if n > self._rcv_seg_max:
                    self._rcv_seg_max = n
            if not self._ts_ok:
                est = self._rrtt_est
                if est is None:
                    est = self._rrtt_est = ReceiverRttEstimator(min_window=self.local_mss)
                s = est.on_data(rcv_total=self._rcv_off, window=(self.rcv_adv - self.rcv_nxt) & MASK, now=now)
                if s is not None:
                    self._tuner.on_rtt_sample(s, window_based=True)
            # RFC 1122 4.2.3.2 / RFC 5681 §4.2: ACK at least every second full-sized
            # segment, else within the delayed-ACK time (with or without timestamps).
            if self._rcv_unacked >= 2 * self._rcv_seg_max or self.config.delayed_ack <= 0:
                self._ack_now = True
            elif self._ack_at is None:
                self._ack_at = now + self.config.delayed_ack
        if fin or (self._rcv_fin_seq is not None and self._rcv_fin_seq == self.rcv_nxt):
            self._on_fin(now)

    def _seq_range(self, r: tuple[int, int]) -> tuple[int, int]:
        """Receive stream offsets ``[start, end)`` as sequence numbers."""
        base = (self.rcv_nxt - self._rcv_off) & MASK
        return ((base + r[0]) & MASK, (base + r[1]) & MASK)

    def _on_fin(self, now: float) -> None:
        self.rcv_nxt = (self.rcv_nxt + 1) & MASK
        self._fin_received = True
        self._rcv_fin_seq = None
        self._ooo = None
        self._events.append(PeerFin())
        st = self.state
        if st is State.ESTABLISHED:
            self.state = State.CLOSE_WAIT
            # The host mostly closes as soon as it reads EOF: like Linux (pingpong mode
            # on FIN), delay the ACK so that it rides on our FIN, one segment instead of
            # two (RFC 1122 4.2.3.2; the delayed-ACK time bounds it if the host stays).
            delay = self.config.delayed_ack
            if delay > 0:
                at = now + delay
                if self._ack_at is None or at < self._ack_at:
                    self._ack_at = at
                return
            self._ack_now = True
            return
        self._ack_now = True
        if st is State.FIN_WAIT_1:
            self.state = State.CLOSING
        elif st is State.FIN_WAIT_2:
            self._enter_time_wait(now)

    def _on_reset(self) -> None:
        if self.state is not State.TIME_WAIT:
            self._events.append(PeerReset())
        self._set_closed()

    def _challenge_ack(self, now: float) -> None:
        if now - self._challenge_start >= 1.0:
            self._challenge_start = now
            self._challenge_count = 0
        if self._challenge_count < CHALLENGE_ACK_LIMIT:
            self._challenge_count += 1
            if self.state is State.SYN_RECEIVED:
                self._synack_due = self.accepted
            else:
                self._ack_now = True

    # ------------------------------------------------------------------------------------
    # Timers

    def handle_timer(self, *, now: float) -> None:
        """Run whatever deadline has passed (delayed ACK, RTO, TLP, RACK, probe, 2MSL, idle)."""
        if self.state is State.CLOSED:
            return
        if self._ack_at is not None and now >= self._ack_at:
            self._ack_at = None
            self._ack_now = True
        if self._pace_at is not None and now >= self._pace_at:
            self._pace_at = None  # segments_to_send (which follows) sends what is due
        if self._reo_at is not None and now >= self._reo_at:
            self._reo_at = None
            self._rack_detect(now)  # RFC 8985 §6.3: the reordering window has passed
        if self._tlp_at is not None and now >= self._tlp_at:
            self._tlp_at = None
            if self.recovery is Recovery.OPEN and self.snd_max != self.snd_una and not self._tlp_out:
                self._tlp_due = True
                self.counters.tlp += 1
                self._timer = Timer.RETRANSMIT  # RFC 8985 §7.3: re-arm the RTO after a probe
                self._timer_at = now + self.rtt.rto
        at = self._timer_at
        if at is not None and now >= at:
            kind = self._timer
            if kind is Timer.RETRANSMIT:
                self._on_rto(now)
            elif kind is Timer.PERSIST:
                self._probes += 1
                if self._probes > self.config.max_retransmits:
                    self._time_out(TimeoutReason.PERSIST)
                else:
                    self._probe_due = True
                    self._persist_backoff += 1
                    self._timer_at = now + self._persist_interval()
            elif kind is Timer.CLOSE:
                if self.state is State.TIME_WAIT:
                    self._set_closed()
                else:
                    self._time_out(TimeoutReason.FIN_WAIT_2)
            elif kind is Timer.IDLE:
                self._time_out(TimeoutReason.IDLE)
        self._arm_timer(now)

    def _on_rto(self, now: float) -> None:
        cfg = self.config
        if self.state is State.SYN_RECEIVED or self.state is State.SYN_SENT:
            self._synack_retries += 1
            if self._synack_retries > cfg.syn_ack_retries:
                self._time_out(TimeoutReason.SYN_ACK)
                return
            self._synack_due = True
            self.rtt.backoff()
            self._timer_at = now + self.rtt.rto
            return
        # A peer that keeps answering with a zero window is alive: the RTO is a probe then.
        if not (self.snd_wnd == 0 and self._rx_since_rto):
            self._retransmits += 1
        self._rx_since_rto = False
        if self._retransmits > cfg.max_retransmits:
            self._time_out(TimeoutReason.RETRANSMIT)
            return
        q = self._q
        self.counters.rto += 1
        # RFC 5681 §3.1 loss window; RFC 6675 §5.1: everything not SACKed is presumed lost
        # and resent lowest first; SACKed data is never resent.
        self.cc.on_rto(in_flight=q.pipe, now=now)
        q.mark_all_lost()
        if self.recovery is not Recovery.LOSS:
            self._arm_undo()  # Eifel (RFC 3522): was this RTO spurious?
            # without timestamps F-RTO (RFC 5682) answers that question
            self._frto = 0 if self._ts_ok else 1
        else:
            self._frto = 0  # a repeated RTO: conventional recovery
        self._frto_new = 0
        self.recovery = Recovery.LOSS
        self._prr = None
        self._recovery_point = q.snd_max
        self._dupacks = 0
        self._rtt_seq = None
        self._tlp_at = self._reo_at = None
        self._tlp_due = self._tlp_out = False
        self.rtt.backoff()
        self._timer_at = now + self.rtt.rto

    def _persist_interval(self) -> float:
        return min(self.rtt.rto * (1 << min(self._persist_backoff, 16)), self.config.max_rto)

    def _arm_timer(self, now: float) -> None:
        """Recompute the main timer after any state change (kept while its kind holds)."""
        st = self.state
        kind = self._timer
        if st is _S_CLOSED:
            self._timer = Timer.NONE
            self._timer_at = None
        elif st is _S_TIME_WAIT:
            pass  # set on entry, restarted by a retransmitted FIN
        elif st is _S_SYN_RECEIVED or st is _S_SYN_SENT:
            if not self.accepted:
                self._timer = Timer.NONE  # the shell's connect timeout governs
                self._timer_at = None
            elif kind is not _T_RETRANSMIT:
                self._timer = _T_RETRANSMIT
                self._timer_at = now + self.rtt.rto
        elif self.snd_max != self.snd_una:
            if kind is not _T_RETRANSMIT:
                self._timer = _T_RETRANSMIT
                self._timer_at = now + self.rtt.rto
            return
        elif self.snd_wnd == 0 and self.tx:
            if kind is not _T_PERSIST:
                self._timer = _T_PERSIST
                self._timer_at = now + self._persist_interval()
        elif st is _S_FIN_WAIT_2:
            self._timer = Timer.CLOSE
            self._timer_at = self._last_rx + self.config.fin_wait_2_timeout
        else:
            self._timer = Timer.IDLE
            self._timer_at = self._last_activity + self.config.idle_timeout
        self._tlp_at = self._reo_at = None  # nothing in flight

    def _enter_time_wait(self, now: float) -> None:
        self.state = State.TIME_WAIT
        self._timer = Timer.CLOSE
        self._timer_at = now + self.config.time_wait
        self._tlp_at = self._reo_at = None
        self.tx.clear()

    def _time_out(self, why: TimeoutReason) -> None:
        self._events.append(TimedOut(why))
        self.abort()

    def _set_closed(self) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self._timer = Timer.NONE
        self._timer_at = None
        self._ack_at = self._tlp_at = self._reo_at = self._pace_at = None
        self._ack_now = self._tlp_due = self._probe_due = self._synack_due = False
        self.tx.clear()
        self._ooo = None
        self._events.append(Closed())

    # ------------------------------------------------------------------------------------
    # Network side: output

    def segments_to_send(self, *, now: float) -> list[TcpSegment]:
        """Everything due now: RSTs, SYN-ACK, retransmissions and data (PRR / cwnd / peer
        window), FIN, ACKs, probes."""
        out = self._ctl
        if out:
            self._ctl = []
        else:
            out = []
        st = self.state
        if st is _S_CLOSED:
            return out
        if st is _S_SYN_RECEIVED or st is _S_SYN_SENT:
            if self._synack_due:
                self._synack_due = False
                out.append(self._build_synack(now) if st is _S_SYN_RECEIVED else self._build_syn(now))
                self._synack_sent_at = now
            self._arm_timer(now)
            return out
        if self._ack_at is not None and now >= self._ack_at:
            self._ack_now = True
        if self._consumed != self._consumed_fed:
            self._consumed_fed = self._consumed
            self._tuner.on_consumed(total=self._consumed, now=now)
        ts_val = ((int(now * 1000) + self._ts_offset) & MASK) if self._ts_ok else None
        q = self._ooo
        sack = (
            self._sack_blocks() if ((q is not None and q.blocks) or self._dsack is not None) and self._sack_ok else ()
        )
        win = self._window_field()
        sent_any = False
        if st in _SENDING:
            sent_any = self._send_data(out, now, ts_val, sack, win)
        if self._probe_due:
            self._probe_due = False
            out.append(self._build((self.snd_una - 1) & MASK, _F_ACK, b"", win, ts_val, sack))
            sent_any = True
        if not sent_any and (self._ack_now or (self._ack_at is not None and now >= self._ack_at)):
            out.append(self._build(self.snd_max, _F_ACK, b"", win, ts_val, sack))
            sent_any = True
        if sent_any:
            self._ack_now = False
            self._ack_at = None
            self._rcv_unacked = 0
            self._last_ack_sent = self.rcv_nxt
            self._dsack = None
        self._arm_timer(now)
        return out

    def _send_data(
        self, out: list[TcpSegment], now: float, ts_val: int | None, sack: tuple[tuple[int, int], ...], win: int
    ) -> bool:
        """Append retransmissions, then new data/FIN segments to ``out``; True if any.

        Order (RFC 6675 NextSeg): a due tail loss probe, segments marked lost (lowest
        first), then new data. Outside recovery the budget is ``cwnd - pipe``; in recovery
        PRR's ``sndcnt``. New data also needs the peer's window.
        """
        q = self._q
        tx = self.tx
        una = q.una
        base = (self.snd_una - una) & MASK  # seq of stream offset 0, mod 2**32
        data_end = una + len(tx)
        fin_pending = self._fin_seq is not None
        max_pl = self._smss - _sack_option_len(len(sack))
        prr = self._prr
        budget = prr.sndcnt if prr is not None and self.cc.prr_in_recovery else self.cc.cwnd - q.pipe
        # Pacing (a rate-based controller asks for it): a token bucket of pacing_rate
        # bytes/s, bursts of at most PACE_BURST_TIME (the shell's timers are coarse).
        rate = self.cc.pacing_rate
        tokens = 0.0
        window_budget = budget
        if rate is not None and rate > 0:
            idle = now - self._pace_t
            tokens = self._pace_tokens + idle * rate
            burst = PACE_BURST_TIME
            if self._pace_limited and idle > burst:
                burst = idle if idle < PACE_LATE_CREDIT_TIME else PACE_LATE_CREDIT_TIME
            cap = max(PACE_BURST_SEGMENTS * self._smss, rate * burst)
            if tokens > cap:
                tokens = cap
            self._pace_t = now
            if budget > tokens:
                budget = int(tokens) + 1  # float rounding must never hold back a due segment
        self._pace_at = None
        spent = 0
        before = len(out)
        force = False
        new_data = False
        if self._tlp_due:
            # RFC 8985 §7.3: one probe: new data if the peer's window allows, else the
            # highest segment not SACKed.
            self._tlp_due = False
            self._tlp_out = True
            nxt = q.snd_max
            if nxt < data_end and nxt + min(max_pl, data_end - nxt) <= una + self.snd_wnd:
                force = True
            else:
                last = q.last_unsacked()
                if last is not None:
                    self._retransmit(out, last, una, base, data_end, now, ts_val, sack, win, max_pl)
        frto_probe = self._frto_new > 0
        if frto_probe:
            # F-RTO step 2: new data probes whether the RTO was spurious
            budget = self._frto_new * max_pl
            self._frto_new = 0
            force = True
        while budget > 0 and not frto_probe:
            r = q.next_lost()
            if r is None:
                break
            n = self._retransmit(out, r, una, base, data_end, now, ts_val, sack, win, max_pl)
            budget -= n
            spent += n
            if prr is not None:
                prr.on_sent(n)
        nxt = q.snd_max
        wnd_end = una + self.snd_wnd
        cwnd_limited = False
        while nxt < data_end:
            avail = data_end - nxt
            n = max_pl if max_pl < avail else avail
            room = wnd_end - nxt
            if room < n:
                # window-limited; sender SWS avoidance (RFC 1122 4.2.3.4)
                if room <= 0 or nxt > una:
                    break
                n = room
            if n > budget and not force and (budget <= 0 or q.pipe > 0):
                cwnd_limited = True
                break
            force = False
            fin = fin_pending and n == avail
            if fin:
                flags = _F_FIN_ACK_PSH
            else:
                flags = _F_ACK_PSH if n == avail else _F_ACK
            off = nxt - una
            out.append(self._build((base + nxt) & MASK, flags, tx.take(off, n), win, ts_val, sack))
            end = nxt + n + (1 if fin else 0)
            q.on_send(nxt, end, fin, now)
            nxt = end
            budget -= n
            spent += n
            if prr is not None:
                prr.on_sent(n)
            new_data = True
        if fin_pending and nxt == data_end:
            out.append(self._build((base + nxt) & MASK, _F_FIN_ACK, b"", win, ts_val, sack))
            q.on_send(nxt, nxt + 1, True, now)
            new_data = True
        if rate is not None and rate > 0:
            tokens -= spent
            self._pace_tokens = tokens
            self._pace_limited = False
            if window_budget > spent and (nxt < data_end or q.next_lost() is not None) and tokens < self._smss:
                self._pace_limited = True
                # paced, not window-limited: come back when a quantum is due (not per
                # segment: every wake-up of the shell costs a loop turn)
                quantum = max(PACE_QUANTUM_SEGMENTS * self._smss, rate * PACE_QUANTUM_TIME)
                self._pace_at = now + (quantum - tokens) / rate + PACE_MIN_WAIT
                cwnd_limited = True
        self._cwnd_limited = cwnd_limited
        if len(out) == before:
            return False
        if new_data:
            smax = (base + q.snd_max) & MASK
            if self._rtt_seq is None and not self._ts_ok and not self._undo_armed:
                self._rtt_seq = smax
                self._rtt_time = now
            self.snd_max = self.snd_nxt = smax
        self._last_activity = now
        if self.recovery is Recovery.OPEN and self._sack_ok and not self._tlp_out:
            self._tlp_at = now + probe_timeout(
                srtt=self.rtt.srtt, flight_segments=q.pipe // self._smss, rto=self.rtt.rto
            )
        return True

    def _retransmit(
        self,
        out: list[TcpSegment],
        r: Sent,
        una: int,
        base: int,
        data_end: int,
        now: float,
        ts_val: int | None,
        sack: tuple[tuple[int, int], ...],
        win: int,
        max_pl: int,
    ) -> int:
        """Resend record ``r`` (only bytes that were sent before); returns its payload size."""
        plen = r.end - r.start - (1 if r.fin else 0)
        off = r.start - una
        if r.fin:
            flags = _F_FIN_ACK_PSH if plen else _F_FIN_ACK
        else:
            flags = _F_ACK_PSH if r.end >= data_end else _F_ACK
        # A record sent before our SACK option grew may not fit with it: leave SACK out then.
        out.append(
            self._build(
                (base + r.start) & MASK,
                flags,
                self.tx.take(off, plen),
                win,
                ts_val,
                sack if plen <= max_pl else (),
            )
        )
        self._q.on_retransmit(r, now)
        self._rtt_seq = None  # Karn: never time a retransmission
        self.counters.retransmitted_bytes += plen
        if self._undo_armed:
            if self._undo_ts is None and ts_val is not None:
                self._undo_ts = ts_val
                self._undo_from = r.start
            self._undo_retrans += 1
        return plen if plen else 1

    @property
    def _rcv_cap(self) -> int:
        """Receive space we may advertise now: the tuner's buffer within the field's reach."""
        size = self._tuner.size
        cap = self._rcv_field_max
        return size if size < cap else cap

    def _window_field(self) -> int:
        """Raw window for our next segment; moves rcv_adv right, never left (RFC 9293 §3.8.6.2.2)."""
        ws = self._rcv_ws
        rcv_nxt = self.rcv_nxt
        grow = self._window_growth()
        # Receiver SWS avoidance (RFC 1122 4.2.3.3): move the edge only by a useful amount.
        if grow and grow >= self._sws_threshold():
            self.rcv_adv = (self.rcv_adv + grow) & MASK
        span = (self.rcv_adv - rcv_nxt) & MASK
        if span >= HALF:
            span = 0  # the peer's FIN took rcv_nxt one past the edge
        raw = (span + (1 << ws) - 1) >> ws  # round up so the edge never moves left
        if raw > 0xFFFF:
            raw = 0xFFFF
        edge = (rcv_nxt + (raw << ws)) & MASK
        if 0 < ((edge - self.rcv_adv) & MASK) < HALF:
            self.rcv_adv = edge
        return raw

    def _window_growth(self) -> int:
        """How far the right edge could move right given the free rx space (0 if not)."""
        free = self._rcv_cap - len(self.rx)
        if free < 0:
            free = 0
        grow = (self.rcv_nxt + free - self.rcv_adv) & MASK
        return 0 if grow >= HALF else grow

    def _sws_threshold(self) -> int:
        return min(self._rcv_cap // 2, self.local_mss)

    def _sack_blocks(self) -> tuple[tuple[int, int], ...]:
        """Up to 3 (4 without timestamps) SACK blocks: a D-SACK block first (RFC 2883 §4),
        then the block of the most recent arrival, then the others (RFC 2018 §4)."""
        limit = 3 if self._ts_ok else 4
        blocks: list[tuple[int, int]] = []
        if self._dsack is not None:
            blocks.append(self._dsack)
        q = self._ooo
        if q is not None and q.blocks:
            blocks.extend(self._seq_range(r) for r in q.sack_blocks(limit - len(blocks)))
        return tuple(blocks)

    def _build(
        self,
        seq: int,
        flags: TcpFlags,
        payload: bytes,
        win: int,
        ts_val: int | None,
        sack: tuple[tuple[int, int], ...],
    ) -> TcpSegment:
        """The one factory for our data/ACK segments (fields by position: a keyword costs
        more than the field; the order is pinned by tests/test_segments.py)."""
        return TcpSegment(
            self._local,
            self._peer,
            self._lport,
            self._pport,
            seq,
            self.rcv_nxt,
            flags,
            win,
            payload,
            None,  # mss
            None,  # wscale
            False,  # sack_permitted
            sack,
            ts_val,
            self._ts_recent if ts_val is not None else None,
        )

    def _build_synack(self, now: float) -> TcpSegment:
        free = max(self._rcv_cap - len(self.rx), 0)
        win = min(free, 0xFFFF)  # never scaled in a SYN (RFC 7323 §2.2)
        self.rcv_adv = (self.rcv_nxt + win) & MASK
        ts_val = ((int(now * 1000) + self._ts_offset) & MASK) if self._ts_ok else None
        return TcpSegment(
            src=self._local,
            dst=self._peer,
            sport=self._lport,
            dport=self._pport,
            seq=self.iss,
            ack=self.rcv_nxt,
            flags=_F_SYN_ACK,
            window=win,
            mss=self.local_mss,
            wscale=self._rcv_ws if self._ws_ok else None,
            sack_permitted=self._sack_ok,
            ts_val=ts_val,
            ts_ecr=self._ts_recent if ts_val is not None else None,
        )

    def _build_syn(self, now: float) -> TcpSegment:
        """Our SYN (active open) offering every option the config allows."""
        cfg = self.config
        ts_val = ((int(now * 1000) + self._ts_offset) & MASK) if cfg.timestamps else None
        return TcpSegment(
            src=self._local,
            dst=self._peer,
            sport=self._lport,
            dport=self._pport,
            seq=self.iss,
            ack=0,
            flags=TcpFlags.SYN,
            window=min(self._rcv_cap, 0xFFFF),
            mss=self.local_mss,
            wscale=self._rcv_ws if cfg.window_scale else None,
            sack_permitted=cfg.sack,
            ts_val=ts_val,
            ts_ecr=0 if ts_val is not None else None,
        )

    def _build_rst(self, seq: int, flags: TcpFlags, ack: int) -> TcpSegment:
        return TcpSegment(
            src=self._local,
            dst=self._peer,
            sport=self._lport,
            dport=self._pport,
            seq=seq & MASK,
            ack=ack & MASK,
            flags=flags,
            window=0,
        )

    def _rst_reply(self, seg: TcpSegment) -> TcpSegment:
        """RST answering ``seg`` (RFC 9293 §3.10.7.1)."""
        if int(seg.flags) & _ACK:
            return self._build_rst(seg.ack, _F_RST, 0)
        return self._build_rst(0, _F_RST_ACK, seg.seq + seg.seg_len)

    def _ts_age(self, ts_ecr: int, now: float) -> float | None:
        """Seconds since we sent the TSval ``ts_ecr`` echoes; None if implausible."""
        rtt_ms = ((int(now * 1000) + self._ts_offset) - ts_ecr) & MASK
        return rtt_ms / 1000.0 if rtt_ms < MAX_RTT_SAMPLE * 1000 else None

    def _rtt_sample_ts(self, ts_ecr: int, now: float) -> float | None:
        rtt = self._ts_age(ts_ecr, now)
        if rtt is not None:
            self.rtt.sample(rtt)
        return rtt

    def __repr__(self) -> str:
        peer, pport, local, lport = self.key
        return f"<TcpConnection {peer}:{pport} -> {local}:{lport} {self.state.value}>"
