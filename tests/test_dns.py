"""DnsResponder: queries built and responses parsed with dnspython, plus TCP framing and fuzz."""

from __future__ import annotations

import struct
from ipaddress import IPv6Address

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsigkeyring
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgslirpy.errors import ConfigError, DropReason
from wgslirpy.net.dns import (
    EDNS_PAYLOAD,
    DnsQuestion,
    DnsResponder,
    frame_tcp_message,
    split_tcp_messages,
)

A = dns.rdatatype.A
AAAA = dns.rdatatype.AAAA


def query(name: str = "www.example.com", rdtype: str | int = "A", **kw: object) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]


def parse(wire: bytes | DnsQuestion | None) -> dns.message.Message:
    assert isinstance(wire, bytes), wire
    return dns.message.from_wire(wire)


def ask(r: DnsResponder, q: dns.message.Message, *, tcp: bool = False) -> DnsQuestion:
    out = r.handle_query(q.to_wire(), tcp=tcp)
    assert isinstance(out, DnsQuestion), out
    return out


def immediate(r: DnsResponder, q: dns.message.Message) -> dns.message.Message:
    resp = parse(r.handle_query(q.to_wire()))
    assert_response_to(resp, q)
    return resp


def assert_response_to(resp: dns.message.Message, q: dns.message.Message) -> None:
    assert resp.id == q.id
    assert resp.flags & dns.flags.QR and resp.flags & dns.flags.RA
    assert (resp.flags & dns.flags.RD) == (q.flags & dns.flags.RD)
    assert resp.opcode() == q.opcode()


def addresses(resp: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in resp.answer for rd in rrset]


# --- A / AAAA via the shell --------------------------------------------------------------


def test_a_query_becomes_a_question_for_the_shell() -> None:
    r = DnsResponder()
    q = query("WWW.Example.COM", "A")
    question = ask(r, q)
    assert (question.id, question.name, question.rdtype) == (q.id, "www.example.com", A)
    assert question.max_size == 512  # no EDNS
    assert r.drops.total() == 0


def test_answer_a_keeps_client_spelling_ttl_and_filters_by_type() -> None:
    r = DnsResponder()
    q = query("WWW.Example.COM", "A")
    resp = parse(r.answer(ask(r, q), ["192.0.2.1", "2001:db8::1", "192.0.2.1", "198.51.100.7"]))
    assert_response_to(resp, q)
    assert resp.rcode() == dns.rcode.NOERROR
    assert resp.question == q.question
    assert str(resp.question[0].name) == "WWW.Example.COM."
    (rrset,) = resp.answer
    assert rrset.name == q.question[0].name and rrset.rdtype == A and rrset.ttl == 60
    assert addresses(resp) == ["192.0.2.1", "198.51.100.7"]
    assert resp.edns < 0  # no OPT without one in the query


def test_answer_aaaa_filters_and_drops_scope_ids() -> None:
    r = DnsResponder(ttl=300)
    q = query("v6.example.net", "AAAA")
    question = ask(r, q)
    assert question.rdtype == AAAA
    resp = parse(r.answer(question, ["192.0.2.1", "fe80::1%eth0", IPv6Address("2001:db8::2")]))
    assert resp.rcode() == dns.rcode.NOERROR
    assert addresses(resp) == ["fe80::1", "2001:db8::2"]
    assert resp.answer[0].rdtype == AAAA and resp.answer[0].ttl == 300


def test_answer_with_nothing_of_the_right_type_is_nodata() -> None:
    r = DnsResponder()
    q = query("v4only.example", "AAAA")
    resp = parse(r.answer(ask(r, q), ["192.0.2.1"]))
    assert resp.rcode() == dns.rcode.NOERROR and resp.answer == []
    assert resp.question == q.question


def test_answer_rejects_a_non_address() -> None:
    r = DnsResponder()
    with pytest.raises(ConfigError):
        r.answer(ask(r, query()), ["not-an-ip"])


@pytest.mark.parametrize(
    ("method", "rcode"),
    [
        ("nxdomain", dns.rcode.NXDOMAIN),
        ("servfail", dns.rcode.SERVFAIL),
        ("nodata", dns.rcode.NOERROR),
    ],
)
def test_negative_responses(method: str, rcode: dns.rcode.Rcode) -> None:
    r = DnsResponder()
    q = query("nothing.example", "A", use_edns=0)
    resp = parse(getattr(r, method)(ask(r, q)))
    assert_response_to(resp, q)
    assert resp.rcode() == rcode and resp.answer == [] and resp.question == q.question
    assert resp.edns == 0


def test_rd_clear_is_copied() -> None:
    r = DnsResponder()
    q = query("www.example.com", "A")
    q.flags &= ~dns.flags.RD
    resp = parse(r.answer(ask(r, q), ["192.0.2.1"]))
    assert not resp.flags & dns.flags.RD and resp.flags & dns.flags.RA


def test_question_equality_ignores_the_parsed_message() -> None:
    r = DnsResponder()
    q = query()
    assert ask(r, q) == ask(r, q)
    assert hash(ask(r, q)) == hash(ask(r, q))


# --- answered directly --------------------------------------------------------------------


@pytest.mark.parametrize("rdtype", ["MX", "TXT", "PTR", "SRV", "NS", "SOA", "CNAME", "HTTPS"])
def test_other_types_get_an_empty_noerror(rdtype: str) -> None:
    r = DnsResponder()
    q = query("example.com", rdtype)
    resp = immediate(r, q)
    assert resp.rcode() == dns.rcode.NOERROR and resp.answer == [] and resp.question == q.question


def test_any_gets_a_synthesized_hinfo() -> None:
    resp = immediate(DnsResponder(), query("example.com", "ANY"))
    assert resp.rcode() == dns.rcode.NOERROR
    (rrset,) = resp.answer
    assert rrset.rdtype == dns.rdatatype.HINFO and rrset[0].cpu == b"RFC8482"


@pytest.mark.parametrize("rdtype", ["AXFR", "IXFR", "MAILB"])
def test_other_meta_types_are_not_implemented(rdtype: str) -> None:
    resp = immediate(DnsResponder(), query("example.com", rdtype))
    assert resp.rcode() == dns.rcode.NOTIMP


@pytest.mark.parametrize("opcode", [dns.opcode.NOTIFY, dns.opcode.STATUS, dns.opcode.IQUERY, dns.opcode.UPDATE])
def test_other_opcodes_are_not_implemented(opcode: dns.opcode.Opcode) -> None:
    q = query("example.com", "SOA")
    q.set_opcode(opcode)
    resp = immediate(DnsResponder(), q)
    assert resp.rcode() == dns.rcode.NOTIMP and resp.opcode() == opcode


def test_unparseable_opcode_is_still_not_implemented() -> None:
    wire = struct.pack("!HHHHHH", 0x1234, 15 << 11, 1, 0, 0, 0) + b"\xff"
    resp = parse(DnsResponder().handle_query(wire))
    assert resp.id == 0x1234 and resp.rcode() == dns.rcode.NOTIMP and resp.opcode() == 15


def test_non_internet_class_is_refused() -> None:
    q = dns.message.make_query("version.bind", "TXT", rdclass=dns.rdataclass.CH)
    assert immediate(DnsResponder(), q).rcode() == dns.rcode.REFUSED


@pytest.mark.parametrize("name", ["localhost", "foo.localhost", "a.b.LocalHost"])
def test_localhost_is_answered_directly(name: str) -> None:
    r = DnsResponder()
    resp = immediate(r, query(name, "A"))
    assert resp.rcode() == dns.rcode.NOERROR and addresses(resp) == ["127.0.0.1"]
    assert resp.answer[0].ttl == 60
    assert addresses(immediate(r, query(name, "AAAA"))) == ["::1"]
    assert sorted(addresses(immediate(r, query(name, "ANY")))) == ["127.0.0.1", "::1"]
    mx = immediate(r, query(name, "MX"))
    assert mx.rcode() == dns.rcode.NOERROR and mx.answer == []


def test_not_localhost_when_only_a_label_is_called_localhost() -> None:
    out = DnsResponder().handle_query(query("localhost.example.com").to_wire())
    assert isinstance(out, DnsQuestion)


@pytest.mark.parametrize("name", ["invalid", "x.invalid", "a.b.INVALID"])
@pytest.mark.parametrize("rdtype", ["A", "AAAA", "TXT"])
def test_invalid_is_nxdomain(name: str, rdtype: str) -> None:
    resp = immediate(DnsResponder(), query(name, rdtype))
    assert resp.rcode() == dns.rcode.NXDOMAIN and resp.answer == []


def test_root_name_is_nodata() -> None:
    resp = immediate(DnsResponder(), query(".", "A"))
    assert resp.rcode() == dns.rcode.NOERROR and resp.answer == []


@pytest.mark.parametrize("label", [b"a b", b"a.b", b"a\\b", b"caf\xc3\xa9", b"\x00"])
def test_names_the_os_resolver_cannot_take_are_refused(label: bytes) -> None:
    q = query(dns.name.Name([label, b"example", b""]).to_text(), "A")  # type: ignore[arg-type]
    assert immediate(DnsResponder(), q).rcode() == dns.rcode.REFUSED


def test_underscores_and_idn_labels_go_to_the_shell() -> None:
    r = DnsResponder()
    assert ask(r, query("_srv._tcp.Example.com")).name == "_srv._tcp.example.com"
    assert ask(r, query("xn--caf-dma.example")).name == "xn--caf-dma.example"


# --- malformed input ---------------------------------------------------------------------


@pytest.mark.parametrize("wire", [b"", b"\x12", b"\x00" * 11])
def test_shorter_than_a_header_is_dropped(wire: bytes) -> None:
    r = DnsResponder()
    assert r.handle_query(wire) is None
    assert r.drops[DropReason.DNS_MALFORMED] == 1


def test_responses_are_never_answered() -> None:
    r = DnsResponder()
    q = query()
    resp = parse(r.answer(ask(r, q), ["192.0.2.1"]))
    assert r.handle_query(resp.to_wire()) is None
    assert r.handle_query(b"\x00\x01\x80\x00" + b"\x00" * 8) is None
    assert r.drops[DropReason.DNS_NOT_A_QUERY] == 2


@pytest.mark.parametrize(
    "tail",
    [
        b"",  # qdcount says 1, no question
        b"\x03www",  # name cut short
        b"\x07example\x03com\x00\x00",  # type cut short
        b"\xc0\x0c\x00\x01\x00\x01",  # compression pointer loop
        b"\x03www\x00\x00\x01\x00\x01junk",  # trailing junk
    ],
)
def test_unparseable_query_gets_header_only_formerr(tail: bytes) -> None:
    wire = struct.pack("!HHHHHH", 0xBEEF, dns.flags.RD, 1, 0, 0, 0) + tail
    r = DnsResponder()
    resp = parse(r.handle_query(wire))
    assert resp.id == 0xBEEF and resp.rcode() == dns.rcode.FORMERR
    assert resp.flags & dns.flags.QR and resp.flags & dns.flags.RD
    assert resp.question == [] and resp.edns < 0
    assert r.drops.total() == 0


def test_qdcount_zero_and_two_are_formerr() -> None:
    r = DnsResponder()
    q0 = query("example.com", "A", use_edns=0)
    q0.question = []
    resp = parse(r.handle_query(q0.to_wire()))
    assert resp.rcode() == dns.rcode.FORMERR and resp.question == [] and resp.edns == 0
    q2 = query("example.com", "A")
    q2.question.append(dns.rrset.RRset(dns.name.from_text("example.org"), dns.rdataclass.IN, A))
    resp = parse(r.handle_query(q2.to_wire()))
    assert resp.id == q2.id and resp.rcode() == dns.rcode.FORMERR and resp.question == []


# --- EDNS and truncation -----------------------------------------------------------------


def test_edns_query_gets_opt_back() -> None:
    r = DnsResponder()
    q = query("example.com", "A", use_edns=0, payload=4096)
    question = ask(r, q)
    assert question.max_size == EDNS_PAYLOAD  # capped at ours
    resp = parse(r.answer(question, ["192.0.2.1"]))
    assert resp.edns == 0 and resp.payload == EDNS_PAYLOAD
    assert resp.rcode() == dns.rcode.NOERROR
    assert immediate(r, query("example.com", "MX", use_edns=0)).edns == 0


def test_small_edns_payload_counts_as_512() -> None:
    assert ask(DnsResponder(), query(use_edns=0, payload=100)).max_size == 512
    assert ask(DnsResponder(), query(use_edns=0, payload=800)).max_size == 800


def test_edns_version_above_zero_gets_badvers() -> None:
    q = query("example.com", "A", use_edns=1)
    resp = immediate(DnsResponder(), q)
    assert resp.rcode() == dns.rcode.BADVERS and resp.edns == 0


MANY = [f"10.0.{i // 256}.{i % 256}" for i in range(100)]  # 100 * 16 bytes of answers


def test_udp_response_without_edns_is_truncated_to_512() -> None:
    r = DnsResponder()
    wire = r.answer(ask(r, query("many.example", "A")), MANY)
    assert len(wire) <= 512
    resp = parse(wire)
    assert resp.flags & dns.flags.TC and resp.rcode() == dns.rcode.NOERROR
    assert resp.question[0].name == dns.name.from_text("many.example")


def test_udp_response_with_edns_is_capped_at_our_payload() -> None:
    r = DnsResponder()
    big = r.answer(ask(r, query("many.example", "A", use_edns=0, payload=4096)), MANY)
    assert len(big) <= EDNS_PAYLOAD and parse(big).flags & dns.flags.TC and parse(big).edns == 0
    fits = parse(r.answer(ask(r, query("many.example", "A", use_edns=0, payload=1232)), MANY[:50]))
    assert not fits.flags & dns.flags.TC and len(addresses(fits)) == 50


def test_tcp_response_is_not_truncated() -> None:
    r = DnsResponder()
    question = ask(r, query("many.example", "A"), tcp=True)
    assert question.max_size == 65535
    resp = parse(r.answer(question, MANY))
    assert not resp.flags & dns.flags.TC and addresses(resp) == MANY


def test_tsig_signed_query_is_answered_unsigned() -> None:
    keyring = dns.tsigkeyring.from_text({"key.": "c2VjcmV0c2VjcmV0c2VjcmV0"})
    q = query("example.com", "A")
    q.use_tsig(keyring, keyname="key.")
    r = DnsResponder()
    resp = parse(r.answer(ask(r, q), ["192.0.2.1"]))
    assert resp.tsig is None and addresses(resp) == ["192.0.2.1"]


def test_bad_ttl_raises() -> None:
    with pytest.raises(ConfigError):
        DnsResponder(ttl=-1)
    with pytest.raises(ConfigError):
        DnsResponder(ttl=2**31)


# --- DNS over TCP framing -----------------------------------------------------------------


def test_tcp_framing_round_trip_several_messages() -> None:
    msgs = [query(f"n{i}.example").to_wire() for i in range(3)] + [b""]
    buf = bytearray(b"".join(frame_tcp_message(m) for m in msgs))
    assert split_tcp_messages(buf) == msgs
    assert buf == bytearray()


def test_tcp_framing_partial_buffers_byte_by_byte() -> None:
    msgs = [query("a.example").to_wire(), query("b.example", "AAAA").to_wire()]
    stream = b"".join(frame_tcp_message(m) for m in msgs)
    buf = bytearray()
    got: list[bytes] = []
    for i in range(len(stream)):
        buf += stream[i : i + 1]
        got += split_tcp_messages(buf)
        if i == 0:
            assert got == [] and buf == bytearray(stream[:1])  # lone length byte stays
    assert got == msgs and not buf


def test_tcp_framing_keeps_the_partial_tail() -> None:
    m = query().to_wire()
    buf = bytearray(frame_tcp_message(m) + frame_tcp_message(m)[:5])
    assert split_tcp_messages(buf) == [m]
    assert bytes(buf) == frame_tcp_message(m)[:5]
    assert split_tcp_messages(buf) == []


def test_frame_matches_dnspython_prepend_length_and_rejects_oversize() -> None:
    q = query()
    assert frame_tcp_message(q.to_wire()) == q.to_wire(prepend_length=True)
    with pytest.raises(ConfigError):
        frame_tcp_message(b"\x00" * 65536)


def test_tcp_query_through_framing_end_to_end() -> None:
    r = DnsResponder()
    buf = bytearray(query("tcp.example", "A").to_wire(prepend_length=True))
    (wire,) = split_tcp_messages(buf)
    question = r.handle_query(wire, tcp=True)
    assert isinstance(question, DnsQuestion)
    framed = frame_tcp_message(r.answer(question, ["192.0.2.9"]))
    (resp_wire,) = split_tcp_messages(bytearray(framed))
    assert addresses(parse(resp_wire)) == ["192.0.2.9"]


# --- fuzz: never raise ----------------------------------------------------------------------


def check_any_input(wire: bytes) -> None:
    r = DnsResponder()
    out = r.handle_query(wire)
    if out is None:
        assert r.drops.total() == 1
        return
    if isinstance(out, DnsQuestion):
        for resp_wire in (r.answer(out, ["192.0.2.1", "::1"]), r.nxdomain(out), r.servfail(out)):
            assert parse(resp_wire).id == out.id
        return
    resp = parse(out)
    assert resp.id == struct.unpack_from("!H", wire)[0] and resp.flags & dns.flags.QR


def test_every_truncation_of_a_valid_query_is_handled() -> None:
    q = query("www.example.com", "AAAA", use_edns=0, payload=1232, want_dnssec=True)
    wire = q.to_wire()
    for n in range(len(wire) + 1):
        check_any_input(wire[:n])


def test_every_single_byte_corruption_of_a_valid_query_is_handled() -> None:
    wire = query("www.example.com", "A", use_edns=0).to_wire()
    for i in range(len(wire)):
        for value in (0x00, 0x3F, 0xC0, 0xFF):
            check_any_input(wire[:i] + bytes([value]) + wire[i + 1 :])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(wire: bytes) -> None:
    check_any_input(wire)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 0xFFFF),
    st.integers(0, 0x7FFF),  # QR clear: these must be answered or parsed, not dropped
    st.tuples(*[st.integers(0, 3)] * 4),
    st.binary(max_size=300),
)
def test_fuzz_plausible_headers(qid: int, flags: int, counts: tuple[int, ...], body: bytes) -> None:
    check_any_input(struct.pack("!HHHHHH", qid, flags, *counts) + body)
