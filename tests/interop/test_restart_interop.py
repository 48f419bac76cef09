"""Restart recovery without ``-p``: the gateway remembers the peer's last authenticated endpoint
(``--endpoint-file``), so after a SIGKILL and a restart it starts the handshake itself and the
wireguard-go client (which would otherwise keep its dead session for ~15 s) is back at once."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from .topology import CLIENT_UNDERLAY_V4, CLIENT_WG_PORT, GW_PING_V4, Topology, WgSlirpyGateway, wait_until

pytestmark = pytest.mark.interop

PING_INTERVAL = 0.1


@pytest.fixture(scope="module")
def restart_topo(socket_buffers: None) -> Iterator[Topology]:
    t = Topology("wgslirpy")
    assert isinstance(t.gateway, WgSlirpyGateway)
    t.gateway.extra_args += ["--endpoint-file", str(t.workdir / "peer-endpoint")]
    try:
        t.up()
        yield t
    finally:
        t.down()


def first_reply_after(topo: Topology, seconds: float) -> float | None:
    """Ping every PING_INTERVAL for ``seconds``; when the first reply's request was sent
    plus its round trip (seconds from the start), or None."""
    count = int(seconds / PING_INTERVAL)
    out = topo.client.run(
        ["ping", "-n", "-c", str(count), "-i", str(PING_INTERVAL), "-W", "2", GW_PING_V4],
        check=False,
        timeout=seconds + 15,
    ).stdout
    for line in out.splitlines():
        m = re.search(r"icmp_seq=(\d+) .*time=([\d.]+) ms", line)
        if m:
            return (int(m.group(1)) - 1) * PING_INTERVAL + float(m.group(2)) / 1000
    return None


def test_client_recovers_after_sigkill_and_restart_without_p(
    restart_topo: Topology, measure: Callable[[str], None]
) -> None:
    topo = restart_topo
    gw = topo.gateway
    assert isinstance(gw, WgSlirpyGateway) and gw.proc is not None
    assert "-p" not in gw.command()
    assert topo.wait_for_ping(GW_PING_V4, timeout=10) is not None
    path = topo.workdir / "peer-endpoint"
    wait_until(path.exists, timeout=5, what="the endpoint file")
    assert path.read_text() == f"{CLIENT_UNDERLAY_V4}:{CLIENT_WG_PORT}\n"
    before = topo.client_wg.latest_handshake(gw.public_key)
    time.sleep(max(0.0, before + 1.1 - time.time()))  # handshake times have 1 s resolution
    topo.tracker.stop(gw.proc, sig=signal.SIGKILL)
    gw.proc = None
    gw.start()  # no initiate_to: nothing but the endpoint file tells it where the client is
    took = first_reply_after(topo, 4.0)
    measure(f"back {took if took is None else round(took, 2)} s after the restarted gateway listened (SIGKILL, no -p)")
    assert took is not None, "no reply within 4 s of the restart (stock behaviour: ~15 s)"
    assert took < 2.0
    assert topo.client_wg.latest_handshake(gw.public_key) > before, "no new handshake"
    assert "initiating to the peer's last known endpoint" in gw.log_tail()
