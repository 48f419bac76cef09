"""Embedding: per-flow handlers (``handle_tcp``/``handle_udp``), the socket-like TcpConn and
UdpEndpoint, start/stop without leaks, the public API. In process, on loopback only: our
own WireGuard core is the client (tests/test_server.py's TunnelClient) and a tiny TCP
sender/receiver made of raw segments plays the peer's TCP.
"""

from __future__ import annotations

import datetime
import gc
import io
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import pytest

import wgslirpy
from wgslirpy import Gateway, TcpConn, UdpEndpoint, Unreachable, forward_tcp
from wgslirpy.net.build import build_tcp, build_udp
from wgslirpy.net.segments import IcmpError, TcpFlags, TcpSegment, UdpDatagram

from .test_server import ME, TunnelClient, make_config

SERVICE = ipaddress.ip_address("10.0.0.80")
ROOT = Path(__file__).resolve().parent.parent


class PeerTcp:
    """The peer's side of one TCP connection, made of raw segments (no retransmission: the
    path is loopback). Without window scaling, so ``window`` is the gateway's in bytes."""

    def __init__(self, client: TunnelClient, dport: int, sport: int, dst: Any = SERVICE) -> None:
        self.client, self.dst, self.dport, self.sport = client, dst, dport, sport
        self.seq = 1000
        self.ack = 0
        self.data = bytearray()
        self.fin = False
        self.rst = False
        self.window = 0
        #: when False, data is taken in but not acknowledged (a slow peer)
        self.acking = True

    def _seg(self, flags: TcpFlags, payload: bytes = b"", window: int = 65535) -> None:
        self.client.send(
            build_tcp(
                TcpSegment(ME, self.dst, self.sport, self.dport, self.seq, self.ack, flags, window, payload=payload)
            )
        )

    def _mine(self, x: object) -> bool:
        return (isinstance(x, TcpSegment) and x.dport == self.sport) or isinstance(x, IcmpError)

    def connect(self) -> object:
        self.client.send(
            build_tcp(TcpSegment(ME, self.dst, self.sport, self.dport, self.seq, 0, TcpFlags.SYN, 65535, mss=1360))
        )
        first = self.client.expect(self._mine)
        if isinstance(first, TcpSegment) and first.flags == TcpFlags.SYN | TcpFlags.ACK:
            self.seq += 1
            self.ack = first.seq + 1
            self.window = first.window
            self._seg(TcpFlags.ACK)
        return first

    def handle(self, seg: TcpSegment) -> None:
        self.window = seg.window
        if seg.flags & TcpFlags.RST:
            self.rst = True
            return
        if seg.payload and seg.seq == self.ack:
            self.data += seg.payload
            self.ack += len(seg.payload)
        if seg.flags & TcpFlags.FIN and seg.seq + len(seg.payload) == self.ack:
            self.ack += 1
            self.fin = True
        if (seg.payload or seg.flags & TcpFlags.FIN) and self.acking:
            self._seg(TcpFlags.ACK)

    def pump(self, until: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the condition did not come true in time")
            try:
                seg = self.client.inbox.get(timeout=min(left, 0.2))
            except gevent.queue.Empty:
                continue
            if isinstance(seg, TcpSegment) and seg.dport == self.sport:
                self.handle(seg)

    def send(self, data: bytes, mss: int = 1300) -> None:
        for i in range(0, len(data), mss):
            chunk = data[i : i + mss]
            self._seg(TcpFlags.ACK | TcpFlags.PSH, chunk)
            self.seq += len(chunk)

    def close(self) -> None:
        self._seg(TcpFlags.ACK | TcpFlags.FIN)
        self.seq += 1

    def was_reset(self) -> bool:
        return self.rst

    def reset(self) -> None:
        self._seg(TcpFlags.RST)


@pytest.fixture
def run_gateway() -> Iterator[Callable[..., tuple[Gateway, TunnelClient]]]:
    made: list[tuple[Gateway, TunnelClient]] = []

    def start(**kw: Any) -> tuple[Gateway, TunnelClient]:
        gw = Gateway(make_config(), **kw)
        gw.start()
        c = TunnelClient(gw.address)
        made.append((gw, c))
        return gw, c

    yield start
    for gw, c in made:
        c.close()
        gw.stop()


_ports = iter(range(41000, 42000))


def peer(client: TunnelClient, dport: int = 7) -> PeerTcp:
    return PeerTcp(client, dport, next(_ports))


# --- TCP handlers --------------------------------------------------------------------------


def test_handler_echo_half_close_and_graceful_close(run_gateway: Callable[..., Any]) -> None:
    seen: list[tuple[Any, Any]] = []

    def echo(conn: TcpConn, src: Any, dst: Any) -> None:
        seen.append((src, dst))
        assert conn.getpeername() == src and conn.getsockname() == dst
        while data := conn.recv(65536):
            conn.sendall(data.upper())
        conn.sendall(b"|after your FIN")  # half-close: we may still send

    gw, client = run_gateway(handle_tcp=echo)
    p = peer(client)
    first = p.connect()
    assert isinstance(first, TcpSegment) and first.flags == TcpFlags.SYN | TcpFlags.ACK
    p.send(b"hello handler")
    p.pump(lambda: bytes(p.data) == b"HELLO HANDLER")
    p.close()
    p.pump(lambda: p.fin)
    assert bytes(p.data) == b"HELLO HANDLER|after your FIN" and not p.rst
    assert seen == [(("10.0.0.2", p.sport), ("10.0.0.80", 7))]
    deadline = time.monotonic() + 5
    while gw.stats()["tcp_flows"] and time.monotonic() < deadline:
        gevent.sleep(0.02)
    assert gw.stats()["tcp_flows"] == 0


def test_syn_is_answered_only_at_first_use(run_gateway: Callable[..., Any]) -> None:
    go = gevent.event.Event()

    def slow(conn: TcpConn, src: Any, dst: Any) -> None:
        go.wait(5)
        conn.sendall(b"late hello")

    _gw, client = run_gateway(handle_tcp=slow)
    p = peer(client)
    client.send(build_tcp(TcpSegment(ME, SERVICE, p.sport, 7, p.seq, 0, TcpFlags.SYN, 65535)))
    with pytest.raises(AssertionError):
        client.expect(p._mine, timeout=0.3)  # nothing yet: the handler has not used conn
    go.set()
    synack = client.expect(p._mine)
    assert isinstance(synack, TcpSegment) and synack.flags == TcpFlags.SYN | TcpFlags.ACK


def test_refuse_is_a_rst(run_gateway: Callable[..., Any]) -> None:
    _gw, client = run_gateway(handle_tcp=lambda conn, src, dst: conn.refuse())
    first = peer(client).connect()
    assert isinstance(first, TcpSegment) and first.flags & TcpFlags.RST


def test_refuse_with_icmp_is_an_unreachable(run_gateway: Callable[..., Any]) -> None:
    gw, client = run_gateway(handle_tcp=lambda conn, src, dst: conn.refuse(icmp=Unreachable.HOST))
    first = peer(client).connect()
    assert isinstance(first, IcmpError) and (first.type, first.code) == (3, 1)
    assert gw.stats()["tcp_flows_in_stack"] == 0


def test_handler_exception_resets_is_logged_and_the_gateway_lives_on(
    run_gateway: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    def buggy(conn: TcpConn, src: Any, dst: Any) -> None:
        conn.sendall(b"x")
        raise ZeroDivisionError("handler bug")

    _gw, client = run_gateway(handle_tcp=buggy)
    for p in (peer(client), peer(client)):
        p.connect()
        p.pump(p.was_reset)
    assert "handler raised" in caplog.text and "ZeroDivisionError" in caplog.text


def test_peer_reset_raises_connection_reset(run_gateway: Callable[..., Any]) -> None:
    got: list[BaseException] = []
    done = gevent.event.Event()

    def reader(conn: TcpConn, src: Any, dst: Any) -> None:
        try:
            conn.recv(10)
            conn.recv(10)
        except OSError as e:
            got.append(e)
        done.set()

    _gw, client = run_gateway(handle_tcp=reader)
    p = peer(client)
    p.connect()
    p.send(b"one")
    gevent.sleep(0.1)
    p.ack = 0
    p.reset()
    assert done.wait(5)
    assert isinstance(got[0], ConnectionResetError)


def test_timeouts_nonblocking_and_closed_handle(run_gateway: Callable[..., Any]) -> None:
    results: list[object] = []
    done = gevent.event.Event()

    def handler(conn: TcpConn, src: Any, dst: Any) -> None:
        with conn:
            conn.settimeout(0.2)
            assert conn.gettimeout() == 0.2
            try:
                conn.recv(10)
            except TimeoutError as e:
                results.append(e)
            conn.setblocking(False)
            assert conn.gettimeout() == 0.0 and not conn.getblocking()
            try:
                conn.recv(10)
            except BlockingIOError as e:
                results.append(e)
            with pytest.raises(io.UnsupportedOperation):
                conn.fileno()
        try:
            conn.recv(1)
        except OSError as e:
            results.append(e)
        done.set()

    _gw, client = run_gateway(handle_tcp=handler)
    p = peer(client)
    p.connect()
    assert done.wait(5)
    assert [type(r) for r in results] == [TimeoutError, BlockingIOError, OSError]
    p.pump(lambda: p.fin)  # the with block closed it gracefully


def test_shutdown_wr_sends_fin_and_send_after_it_is_a_broken_pipe(run_gateway: Callable[..., Any]) -> None:
    errors: list[BaseException] = []

    def handler(conn: TcpConn, src: Any, dst: Any) -> None:
        conn.sendall(b"bye")
        conn.shutdown(socket.SHUT_WR)
        try:
            conn.send(b"more")
        except BrokenPipeError as e:
            errors.append(e)
        assert conn.recv(100) == b"still talking"

    _gw, client = run_gateway(handle_tcp=handler)
    p = peer(client)
    p.connect()
    p.pump(lambda: p.fin)
    assert bytes(p.data) == b"bye" and len(errors) == 1
    p.send(b"still talking")
    p.close()
    gevent.sleep(0.2)
    assert not p.rst


def test_slow_handler_closes_the_peers_window(run_gateway: Callable[..., Any]) -> None:
    """Bytes the handler does not read stay in the buffer: the advertised window falls to
    zero; once it reads, the window opens again."""
    go = gevent.event.Event()
    total = gevent.event.AsyncResult()

    def lazy(conn: TcpConn, src: Any, dst: Any) -> None:
        conn.accept()
        go.wait(10)
        n = 0
        while data := conn.recv(65536):
            n += len(data)
        total.set(n)

    _gw, client = run_gateway(handle_tcp=lazy)
    p = peer(client)
    p.connect()
    sent = 0
    for _ in range(200):  # send within the advertised window until it is closed
        if p.window < 1300:
            break
        p.send(b"z" * 1300)
        sent += 1300
        p.pump(lambda: True, timeout=1)
        gevent.sleep(0.005)
        while not client.inbox.empty():
            seg = client.inbox.get()
            if isinstance(seg, TcpSegment):
                p.handle(seg)
    assert p.window < 1300, "the window never closed"
    go.set()
    p.pump(lambda: p.window >= 1300)
    p.close()
    assert total.get(timeout=10) == sent


def test_slow_peer_blocks_sendall(run_gateway: Callable[..., Any]) -> None:
    """A peer that acknowledges nothing: sendall of more than the buffers hold does not
    return; once the peer reads, it does."""
    finished = gevent.event.Event()
    blob = os.urandom(1_000_000)

    def pusher(conn: TcpConn, src: Any, dst: Any) -> None:
        conn.sendall(blob)
        finished.set()

    _gw, client = run_gateway(handle_tcp=pusher)
    p = peer(client)
    p.acking = False
    p.connect()
    gevent.sleep(0.5)
    while not client.inbox.empty():
        seg = client.inbox.get()
        if isinstance(seg, TcpSegment):
            p.handle(seg)
    assert not finished.is_set(), "sendall returned though the peer acknowledged nothing"
    p.acking = True
    p._seg(TcpFlags.ACK)
    p.pump(lambda: len(p.data) == len(blob), timeout=30)
    assert finished.wait(5) and bytes(p.data) == blob


def test_forward_tcp_needs_an_unused_conn(run_gateway: Callable[..., Any]) -> None:
    errors: list[BaseException] = []

    def handler(conn: TcpConn, src: Any, dst: Any) -> None:
        conn.accept()
        try:
            forward_tcp(conn, src, dst)
        except RuntimeError as e:
            errors.append(e)

    _gw, client = run_gateway(handle_tcp=handler)
    p = peer(client)
    p.connect()
    p.pump(lambda: p.fin)
    assert len(errors) == 1


def test_pywsgi_app_served_through_conn(run_gateway: Callable[..., Any]) -> None:
    from gevent.pywsgi import WSGIServer

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body = f"hello {environ['PATH_INFO']} from {environ['REMOTE_ADDR']}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    wsgi = WSGIServer(("127.0.0.1", 0), app, log=None)  # never started: only its handle()

    def handle_tcp(conn: TcpConn, src: Any, dst: Any) -> None:
        wsgi.handle(conn, src)

    _gw, client = run_gateway(handle_tcp=handle_tcp)
    p = peer(client, dport=80)
    p.connect()
    p.send(b"GET /page HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    p.pump(lambda: p.fin)
    text = bytes(p.data).decode()
    assert text.startswith("HTTP/1.1 200 OK") and text.count("200 OK") == 2
    assert "hello /page from 10.0.0.2" in text and "hello /two from 10.0.0.2" in text


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tunnel.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("tunnel.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_file), str(key_file)


class BioTls:
    """TLS over a byte stream with MemoryBIOs: ``read_some()``/``write(bytes)`` move the
    ciphertext (a TcpConn's recv/sendall, or the test's PeerTcp)."""

    def __init__(
        self,
        obj: ssl.SSLObject,
        read_some: Callable[[], bytes],
        write: Callable[[bytes], None],
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
    ) -> None:
        self.obj, self.read_some, self.write_raw = obj, read_some, write
        self.incoming, self.outgoing = incoming, outgoing

    def _io(self, op: Callable[[], Any]) -> Any:
        while True:
            try:
                result = op()
            except ssl.SSLWantReadError:
                self._flush()
                data = self.read_some()
                if not data:
                    self.incoming.write_eof()
                else:
                    self.incoming.write(data)
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        if out := self.outgoing.read():
            self.write_raw(out)

    def handshake(self) -> None:
        self._io(self.obj.do_handshake)

    def recv(self) -> bytes:
        try:
            return bytes(self._io(lambda: self.obj.read(65536)))
        except ssl.SSLZeroReturnError:
            return b""

    def send(self, data: bytes) -> None:
        self._io(lambda: self.obj.write(data))


def test_tls_echo_over_conn_with_memory_bio(run_gateway: Callable[..., Any], tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)

    def tls_echo(conn: TcpConn, src: Any, dst: Any) -> None:
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = BioTls(server_ctx.wrap_bio(inc, out, server_side=True), lambda: conn.recv(65536), conn.sendall, inc, out)
        tls.handshake()
        while data := tls.recv():
            tls.send(b"tls:" + data)

    _gw, client = run_gateway(handle_tcp=tls_echo)
    p = peer(client, dport=443)
    p.connect()
    taken = 0

    def read_some() -> bytes:
        nonlocal taken
        p.pump(lambda: len(p.data) > taken or p.fin)
        chunk = bytes(p.data[taken:])
        taken = len(p.data)
        return chunk

    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cert)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = BioTls(client_ctx.wrap_bio(inc, out, server_hostname="tunnel.test"), read_some, p.send, inc, out)
    tls.handshake()
    tls.send(b"secret" * 1000)
    got = b""
    while len(got) < len(b"tls:" + b"secret" * 1000):
        got += tls.recv()
    assert got == b"tls:" + b"secret" * 1000


def test_makefile_lines(run_gateway: Callable[..., Any]) -> None:
    def handler(conn: TcpConn, src: Any, dst: Any) -> None:
        with conn, conn.makefile("rb") as rf, conn.makefile("wb") as wf:
            for line in rf:
                wf.write(b"> " + line)
                wf.flush()

    _gw, client = run_gateway(handle_tcp=handler)
    p = peer(client)
    p.connect()
    p.send(b"one\ntwo\n")
    p.close()
    p.pump(lambda: p.fin)
    assert bytes(p.data) == b"> one\n> two\n"


# --- UDP handlers --------------------------------------------------------------------------


def test_udp_handler_answers_whole_datagrams(run_gateway: Callable[..., Any]) -> None:
    calls: list[tuple[Any, Any]] = []

    def handle_udp(ep: UdpEndpoint, src: Any, dst: Any) -> None:
        calls.append((src, dst))
        while data := ep.recv():
            ep.send(b"echo:" + data)
            ep.sendto(b"aside", ("10.0.0.99", 9))

    gw, client = run_gateway(handle_udp=handle_udp)
    for payload in (b"a", b"b" * 3000):
        client.send(build_udp(UdpDatagram(ME, SERVICE, 5555, 7, payload)))
        back = client.expect(lambda x: isinstance(x, UdpDatagram) and x.src == SERVICE)
        assert isinstance(back, UdpDatagram) and back.payload == b"echo:" + payload and back.sport == 7
        aside = client.expect(lambda x: isinstance(x, UdpDatagram))
        assert isinstance(aside, UdpDatagram) and str(aside.src) == "10.0.0.99" and aside.sport == 9
    assert calls == [(("10.0.0.2", 5555), ("10.0.0.80", 7))]  # one handler per binding
    assert gw.stats()["udp_bindings"] == 1


# --- lifecycle and API ---------------------------------------------------------------------


def _greenlets() -> int:
    kind = gevent.getcurrent().__class__.__mro__[-2]  # greenlet.greenlet, the base of them all
    return sum(1 for o in gc.get_objects() if isinstance(o, kind) and not o.dead)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_start_stop_twenty_times_with_flows_open_leaks_nothing() -> None:
    def hold(conn: TcpConn, src: Any, dst: Any) -> None:
        conn.accept()
        conn.recv(10)  # blocks until stop() resets the flow

    def udp_hold(ep: UdpEndpoint, src: Any, dst: Any) -> None:
        ep.recv()
        ep.recv()

    def cycle() -> None:
        gw = Gateway(make_config(), handle_tcp=hold, handle_udp=udp_hold)
        gw.start()
        client = TunnelClient(gw.address)
        try:
            p = peer(client)
            p.connect()
            client.send(build_udp(UdpDatagram(ME, SERVICE, 6000, 7, b"x")))
            deadline = time.monotonic() + 5
            while not (gw.stats()["tcp_flows"] and gw.stats()["udp_bindings"]) and time.monotonic() < deadline:
                gevent.sleep(0.01)
            assert gw.stats()["tcp_flows"] == 1 and gw.stats()["udp_bindings"] == 1
        finally:
            client.close()
            gw.stop(timeout=2)
        assert len(gw._group) == 0

    cycle()
    gc.collect()
    fds, greenlets = _fds(), _greenlets()
    for _ in range(20):
        cycle()
    gevent.sleep(0.1)
    gc.collect()
    assert _fds() <= fds
    assert _greenlets() <= greenlets


def test_public_api() -> None:
    assert set(wgslirpy.__all__) >= {
        "Config",
        "Gateway",
        "forward_tcp",
        "forward_udp",
        "TcpConn",
        "UdpEndpoint",
        "Unreachable",
        "ConfigError",
        "WgSlirpError",
    }
    for name in wgslirpy.__all__:
        assert getattr(wgslirpy, name) is not None
        assert getattr(wgslirpy, name).__doc__ or name in ("__version__", "Address")
    assert (Path(wgslirpy.__file__).parent / "py.typed").exists()
    code = (
        "import sys, wgslirpy, signal; h = signal.getsignal(signal.SIGTERM); "
        "from wgslirpy import Gateway, TcpConn; import gevent.monkey; "
        "assert not gevent.monkey.is_module_patched('socket'); assert signal.getsignal(signal.SIGTERM) is h"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def _readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Use as a library")
    block = text[text.index("```python", start) + len("```python") :]
    return block[: block.index("```")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_readme_snippet_stops_cleanly_on_signals(tmp_path: Path, sig: signal.Signals) -> None:
    """The README's library snippet, run as written (keys and the bind address in the
    environment, as it reads them), exits 0 without a traceback on SIGTERM and Ctrl-C."""
    import base64

    from wgslirpy.wg import crypto

    def b64(key: bytes) -> str:
        return base64.b64encode(key).decode()

    script = tmp_path / "snippet.py"
    script.write_text(_readme_snippet() + "\nprint('stopped', flush=True)\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "WG_BIND": "127.0.0.1:0",
        "WG_PRIVATE_KEY": b64(crypto.clamp(os.urandom(32))),
        "WG_PEER_KEY": b64(crypto.public_key(crypto.clamp(os.urandom(32)))),
    }
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    try:
        deadline = time.monotonic() + 30
        assert proc.stderr is not None
        seen = ""
        while "listening on" not in seen:  # the snippet logs "listening on ..." once it serves
            line = proc.stderr.readline()
            assert line and time.monotonic() < deadline, seen
            seen += line
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped" in out
