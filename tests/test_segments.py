"""The record types of ``net/segments.py``: field order and defaults are part of the contract.

Hot paths (``net/packet.py``'s struct decoders, ``net/tcp.py``'s segment builders, ``net/stack.py``)
build these records positionally, because a NamedTuple built by keyword costs about twice as much.
A reorder or rename of fields would silently swap values there (``sport``/``dport`` are both ints),
so these tests pin the order: change them only together with every positional call site.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from wgslirpy.net.segments import IcmpEcho, IcmpError, OtherIp, TcpFlags, TcpSegment, UdpDatagram


def test_tcp_segment_field_order_is_pinned() -> None:
    assert TcpSegment._fields == (
        "src", "dst", "sport", "dport", "seq", "ack", "flags", "window", "payload",
        "mss", "wscale", "sack_permitted", "sack_blocks", "ts_val", "ts_ecr",
    )  # fmt: skip


def test_tcp_segment_options_default_to_absent() -> None:
    a, b = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
    seg = TcpSegment(a, b, 1, 2, 3, 4, TcpFlags.ACK, 5)
    assert seg.payload == b""
    assert (seg.mss, seg.wscale, seg.sack_permitted, seg.sack_blocks, seg.ts_val, seg.ts_ecr) == (
        None, None, False, (), None, None,
    )  # fmt: skip
    # Positional and keyword construction give the same record.
    assert seg == TcpSegment(src=a, dst=b, sport=1, dport=2, seq=3, ack=4, flags=TcpFlags.ACK, window=5)


def test_other_record_field_orders_are_pinned() -> None:
    assert UdpDatagram._fields == ("src", "dst", "sport", "dport", "payload")
    assert IcmpEcho._fields == ("src", "dst", "is_request", "ident", "seq", "payload")
    assert IcmpError._fields == ("src", "dst", "type", "code", "quoted")
    assert OtherIp._fields == ("src", "dst", "proto")


def test_packet_option_record_mirrors_the_segment_options() -> None:
    # net/packet.py parses TCP options into its own small record before building the
    # segment; its fields and defaults must be exactly TcpSegment's option fields.
    from wgslirpy.net.packet import _TcpOptions

    assert _TcpOptions._fields == TcpSegment._fields[9:]
    assert _TcpOptions._field_defaults == {k: TcpSegment._field_defaults[k] for k in _TcpOptions._fields}
