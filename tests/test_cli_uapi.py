"""The UAPI: request framing, get/set protocol, ``wg show``-style output, and the socket server
against a real in-process Gateway on loopback."""

from __future__ import annotations

import base64
import errno
import os
import socket
import stat
from pathlib import Path

import pytest

from wgslirpy import uapi
from wgslirpy.config import Config
from wgslirpy.wg import crypto

PRIV = crypto.clamp(bytes(range(32)))
PEER_PRIV = crypto.clamp(bytes(range(1, 33)))
PEER = crypto.public_key(PEER_PRIV)
OTHER = crypto.public_key(crypto.clamp(bytes(range(2, 34))))


def test_reader_frames_requests_across_reads() -> None:
    r = uapi.RequestReader()
    assert r.feed(b"get=1\n") == []
    got = r.feed(b"\nset=1\npublic_key=ab\n\nget")
    assert got == [uapi.Request("get"), uapi.Request("set", (("public_key", "ab"),))]
    assert r.feed(b"=1\n\n") == [uapi.Request("get")]


@pytest.mark.parametrize("data", [b"frob=1\n\n", b"get=1\nx=1\n\n", b"set=1\nnoequals\n\n", b"\xff=1\n\n"])
def test_reader_refuses_garbage(data: bytes) -> None:
    with pytest.raises(uapi.UapiError) as e:
        uapi.RequestReader().feed(data)
    assert e.value.code == errno.EPROTO


def test_reader_bounds_a_request() -> None:
    with pytest.raises(uapi.UapiError):
        uapi.RequestReader().feed(b"set=1\n" + b"x" * (uapi.MAX_REQUEST_BYTES + 1))


def info(**peer: object) -> uapi.DeviceInfo:
    p = dict(
        public_key=PEER,
        endpoint=("192.0.2.7", 51000),
        last_handshake=1700000000.25,
        rx_bytes=1500,
        tx_bytes=3 * 1024 * 1024,
        persistent_keepalive=25,
        allowed_ips=("0.0.0.0/0", "::/0"),
    )
    p.update(peer)
    return uapi.DeviceInfo(PRIV, 51820, uapi.PeerInfo(**p))  # type: ignore[arg-type]


def test_format_get() -> None:
    assert uapi.format_get(info()).decode() == (
        f"private_key={PRIV.hex()}\nlisten_port=51820\npublic_key={PEER.hex()}\nprotocol_version=1\n"
        "endpoint=192.0.2.7:51000\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=250000000\n"
        f"tx_bytes={3 * 1024 * 1024}\nrx_bytes=1500\npersistent_keepalive_interval=25\n"
        "allowed_ip=0.0.0.0/0\nallowed_ip=::/0\nerrno=0\n\n"
    )
    text = uapi.format_get(info(endpoint=("::ffff:192.0.2.9", 1), preshared_key=OTHER)).decode()
    assert "endpoint=192.0.2.9:1\n" in text and f"preshared_key={OTHER.hex()}\n" in text
    assert "endpoint=[2001:db8::1]:5\n" in uapi.format_get(info(endpoint=("2001:db8::1", 5))).decode()


def test_get_round_trip_and_show() -> None:
    dev = uapi.parse_get(uapi.format_get(info()))
    assert dev.fields["listen_port"] == "51820" and dev.peers[0]["allowed_ip"] == ["0.0.0.0/0", "::/0"]
    text = uapi.format_show(dev, name="wgs0", now=1700000075.0, public_key="PUB")
    assert text == (
        "interface: wgs0\n  public key: PUB\n  private key: (hidden)\n  listening port: 51820\n\n"
        f"peer: {base64.b64encode(PEER).decode()}\n  endpoint: 192.0.2.7:51000\n  allowed ips: 0.0.0.0/0, ::/0\n"
        "  latest handshake: 1 minute, 15 seconds ago\n  transfer: 1.46 KiB received, 3.00 MiB sent\n"
        "  persistent keepalive: every 25 seconds\n"
    )
    with pytest.raises(uapi.UapiError):
        uapi.parse_get(b"errno=22\n\n")
    with pytest.raises(uapi.UapiError):
        uapi.parse_get(b"listen_port=1\n")


def _set(*lines: str) -> uapi.SetChanges:
    req = uapi.RequestReader().feed(("set=1\n" + "".join(line + "\n" for line in lines) + "\n").encode())[0]
    return uapi.parse_set(
        req, private_key=PRIV, listen_port=51820, peer_public_key=PEER, allowed_ips=("0.0.0.0/0", "::/0")
    )


def test_set_endpoint_and_keepalive() -> None:
    # What `wg set IF peer KEY persistent-keepalive 9 endpoint 192.0.2.1:7` sends.
    c = _set(f"public_key={PEER.hex()}", "endpoint=192.0.2.1:7", "persistent_keepalive_interval=9")
    assert c == uapi.SetChanges(endpoint=("192.0.2.1", 7), persistent_keepalive=9)
    assert _set(f"public_key={PEER.hex()}", "endpoint=[2001:db8::2]:51820").endpoint == ("2001:db8::2", 51820)
    assert _set(f"public_key={PEER.hex()}", "persistent_keepalive_interval=0").persistent_keepalive == 0
    # Restating what is already so (as `wg syncconf`-style tools do) is fine.
    assert (
        _set(
            f"private_key={PRIV.hex()}",
            "listen_port=51820",
            "fwmark=0",
            f"public_key={PEER.hex()}",
            "protocol_version=1",
            "replace_allowed_ips=true",
            "allowed_ip=::/0",
            "allowed_ip=0.0.0.0/0",
        )
        == uapi.SetChanges()
    )


@pytest.mark.parametrize(
    "lines, code",
    [
        ([f"private_key={OTHER.hex()}"], errno.EPERM),
        (["listen_port=1"], errno.EPERM),
        (["replace_peers=true"], errno.EPERM),
        ([f"public_key={OTHER.hex()}"], errno.EPERM),
        (["public_key=zz"], errno.EINVAL),
        (["endpoint=192.0.2.1:7"], errno.EINVAL),  # a peer key before peer settings
        ([f"public_key={PEER.hex()}", "endpoint=nowhere"], errno.EINVAL),
        ([f"public_key={PEER.hex()}", "endpoint=192.0.2.1:0"], errno.EINVAL),
        ([f"public_key={PEER.hex()}", "persistent_keepalive_interval=70000"], errno.EINVAL),
        ([f"public_key={PEER.hex()}", "remove=true"], errno.EPERM),
        ([f"public_key={PEER.hex()}", "replace_allowed_ips=true", "allowed_ip=10.0.0.0/8"], errno.EPERM),
        ([f"public_key={PEER.hex()}", "preshared_key=" + "11" * 32], errno.EPERM),
        ([f"public_key={PEER.hex()}", "bogus=1"], errno.EINVAL),
    ],
)
def test_set_refusals(lines: list[str], code: int) -> None:
    with pytest.raises(uapi.UapiError) as e:
        _set(*lines)
    assert e.value.code == code


# --- the server, with a real gateway ---------------------------------------------------------


def _talk(path: str, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(request)
        data = b""
        while not data.endswith(b"\n\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def test_server_get_and_set_with_a_gateway(tmp_path: Path) -> None:
    import gevent

    from wgslirpy.io.server import Gateway
    from wgslirpy.io.uapi import UapiServer

    config = Config.create(private_key=PRIV, peer_key=PEER, bind="127.0.0.1:0", keepalive_interval=None)
    path = str(tmp_path / "ctl" / "uapi.sock")
    with Gateway(config) as gw:
        server = UapiServer(gw, path)
        server.start()
        try:
            assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0
            # A second server must not steal a live socket.
            with pytest.raises(OSError):
                UapiServer(gw, path).start()

            def client(req: bytes) -> bytes:
                answer: bytes = gevent.get_hub().threadpool.apply(_talk, (path, req))
                return answer

            dev = uapi.parse_get(client(b"get=1\n\n"))
            assert dev.fields["listen_port"] == str(gw.server_port)
            assert dev.fields["private_key"] == PRIV.hex()
            assert dev.peers[0]["public_key"] == [PEER.hex()] and "endpoint" not in dev.peers[0]
            answer = client(
                f"set=1\npublic_key={PEER.hex()}\nendpoint=127.0.0.1:9\npersistent_keepalive_interval=30\n\n".encode()
            )
            assert answer == b"errno=0\n\n"
            assert gw.endpoint.endpoint == ("127.0.0.1", 9)
            assert gw.endpoint.timers.persistent_keepalive_interval == 30
            dev = uapi.parse_get(client(b"get=1\n\n"))
            assert dev.peers[0]["endpoint"] == ["127.0.0.1:9"]
            assert dev.peers[0]["persistent_keepalive_interval"] == ["30"]
            assert client(f"set=1\npublic_key={OTHER.hex()}\n\n".encode()) == f"errno={errno.EPERM}\n\n".encode()
            assert client(b"nonsense\n\n") == f"errno={errno.EPROTO}\n\n".encode()
        finally:
            server.stop()
    assert not os.path.exists(path)


def test_stale_socket_is_taken_over(tmp_path: Path) -> None:
    from wgslirpy.io.server import Gateway
    from wgslirpy.io.uapi import UapiServer

    path = str(tmp_path / "uapi.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens
    config = Config.create(private_key=PRIV, peer_key=PEER, bind="127.0.0.1:0")
    with Gateway(config) as gw:
        server = UapiServer(gw, path)
        server.start()
        server.stop()
    assert not os.path.exists(path)
