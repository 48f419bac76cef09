"""The scripts in examples/ through the real client (kernel TCP/UDP -> wireguard-go -> example).

One topology; each test starts one example in ns gw in place of ``wgslirpy`` (same key and
peer options, the example's own setting in its environment variable) and restarts it for
the next. The served addresses are in the gateway's prefix 10.202.0.0/24, which the client
routes into the tunnel.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence

import pytest

from .conftest import gateway_kind
from .servers import HTTP_PORT, UDP_ECHO_PORT
from .topology import (
    GW_PING_V4,
    PYTHON,
    REPO_ROOT,
    SRV_V4,
    Topology,
    WgSlirpyGateway,
    wait_until,
)

EXAMPLES = REPO_ROOT / "examples"
WSGI_ADDRESS = "10.202.0.80"
ECHO_ADDRESS = "10.202.0.7"


class ExampleGateway(WgSlirpyGateway):
    """``python examples/<script>`` with wgslirpy's options instead of ``python -m wgslirpy``."""

    kind = "example"
    script = "wsgi_in_tunnel.py"
    env: Sequence[str] = ()

    def command(self, *, initiate_to: str | None = None) -> list[str]:
        cmd = super().command(initiate_to=initiate_to)
        assert cmd[:3] == [PYTHON, "-m", "wgslirpy"]
        return ["env", *self.env, PYTHON, str(EXAMPLES / self.script), *cmd[3:]]


@pytest.fixture(scope="module")
def topo(socket_buffers: None) -> Generator[Topology, None, None]:
    if gateway_kind() != "wgslirpy":
        pytest.skip("the examples are wgslirpy programs")
    t = Topology(
        gateway_factory=lambda topo, key: ExampleGateway(topo, key),
        keep_workdir=os.environ.get("WGSLIRPY_INTEROP_KEEP") == "1",
    )
    with t:  # up() cleans up after itself if it fails; down() at the end
        yield t


def run_example(topo: Topology, script: str, *env: str) -> ExampleGateway:
    gw = topo.gateway
    assert isinstance(gw, ExampleGateway)
    gw.stop()
    gw.script, gw.env = script, env
    gw.start(initiate_to=topo.client_initiate_endpoint())
    assert topo.wait_for_ping(GW_PING_V4, timeout=20) is not None, "tunnel does not come up:\n" + gw.log_tail()
    return gw


def curl(topo: Topology, url: str, *extra: str) -> tuple[int, str, str]:
    proc = topo.client.run(["curl", "-sS", "--max-time", "20", *extra, url], timeout=40, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def test_wsgi_app_inside_the_tunnel_and_the_rest_forwarded(topo: Topology) -> None:
    gw = run_example(topo, "wsgi_in_tunnel.py", f"WSGI_ADDRESS={WSGI_ADDRESS}:80")
    code, out, err = curl(topo, f"http://{WSGI_ADDRESS}/hello", "--fail")
    assert code == 0, err + gw.log_tail()
    assert out == "hello 10.202.0.2, this is /hello inside the tunnel\n"
    # keep-alive: two requests on one connection
    code, out, err = curl(
        topo, f"http://{WSGI_ADDRESS}/one", "--fail", "-o", "/dev/stdout", f"http://{WSGI_ADDRESS}/two"
    )
    assert code == 0 and "/one" in out and "/two" in out, err
    size = 3_000_000
    code, out, err = curl(
        topo, f"http://{SRV_V4}:{HTTP_PORT}/blob/{size}/7", "--fail", "-o", "/dev/null", "-w", "%{size_download}"
    )
    assert code == 0 and out == str(size), err  # forwarded by forward_tcp
    assert gw.stop() == 0  # SIGTERM: a clean exit
    assert "Traceback" not in gw.log_tail(20000)


def test_filtering_relay_logs_and_refuses(topo: Topology) -> None:
    gw = run_example(topo, "filtering_relay.py", f"DENY={SRV_V4}:9002,10.203.0.99")
    size = 1_000_000
    code, out, err = curl(
        topo, f"http://{SRV_V4}:{HTTP_PORT}/blob/{size}/3", "--fail", "-o", "/dev/null", "-w", "%{size_download}"
    )
    assert code == 0 and out == str(size), err + gw.log_tail()
    code, _, err = curl(topo, f"http://{SRV_V4}:9002/")
    assert code == 7, err  # "Failed to connect": refused with a RST
    wait_until(
        lambda: "bytes down" in gw.log_tail(20000) and "denied" in gw.log_tail(20000),
        timeout=10,
        what="the relay's log lines",
    )
    log = gw.log_tail(20000)
    assert f"-> {SRV_V4}:{HTTP_PORT}: closed," in log and f"{SRV_V4}:9002: denied" in log
    line = next(x for x in log.splitlines() if f"-> {SRV_V4}:{HTTP_PORT}: closed" in x)
    down = int(line.split("bytes up, ")[1].split()[0])
    assert down > size  # the blob plus the HTTP headers
    assert gw.stop() == 0


_UDP_PROBE = """
import socket, sys
host, port, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
for attempt in range(5):
    s.sendto(payload, (host, port))
    try:
        data, addr = s.recvfrom(65535)
    except socket.timeout:
        continue
    print(addr[0], addr[1], data.decode())
    break
"""


def test_udp_echo_in_process_and_the_rest_forwarded(topo: Topology) -> None:
    gw = run_example(topo, "udp_echo.py", f"ECHO_ADDRESS={ECHO_ADDRESS}:7")

    def probe(host: str, port: int, payload: str) -> str:
        proc = topo.client.run([PYTHON, "-c", _UDP_PROBE, host, str(port), payload], timeout=40, check=False)
        return proc.stdout.strip()

    assert probe(ECHO_ADDRESS, 7, "ping1") == f"{ECHO_ADDRESS} 7 echo: ping1", gw.log_tail()
    assert probe(ECHO_ADDRESS, 7, "x" * 3000) == f"{ECHO_ADDRESS} 7 echo: " + "x" * 3000
    forwarded = probe(SRV_V4, UDP_ECHO_PORT, "via the host")
    assert forwarded.startswith(f"{SRV_V4} {UDP_ECHO_PORT} ") and "via the host" in forwarded
    assert gw.stop() == 0
    assert "Traceback" not in gw.log_tail(20000)
