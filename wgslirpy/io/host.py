"""What a flow may ask of the gateway: the contract between the shell's flows and ``Gateway``.

The flow modules (``tcp_forward.py``, ``udp_forward.py``, ``dns_server.py``, ``conn.py``,
``incoming.py``) are written against :class:`FlowHost`, never against
:class:`~wgslirpy.io.server.Gateway` itself, so none of them imports ``server.py`` (which
imports them all) and the list below is the whole of what a flow may use:

* ``stack``: the pure IP stack. A flow drives its TCP connection only through the stack's
  host-side operations (``tcp_accept``, ``tcp_refuse``, ``tcp_unreachable``, ``tcp_send``,
  ``tcp_read``, ``tcp_close``, ``tcp_abort``; see net/stack.py), which mark the connection
  for output, and UDP through ``udp_reply``, ``udp_icmp_error``, ``dns_udp_reply``, ...;
* ``flush()``: the one place that sends what the cores queued (a flow calls it after each
  operation; the gateway's reader also flushes once per loop turn);
* ``now()``: the gateway's monotonic clock, the ``now`` every core call takes;
* ``spawn(fn, *args)``: a greenlet in the gateway's group (``stop()`` kills it);
* ``flow_finished(conn)``: a TCP flow's greenlet ends (the gateway forgets the flow);
* ``config``: the validated :class:`~wgslirpy.config.Config` (e.g. ``connect_timeout``);
* ``drops``: the shell's own drop counter (merged into the stats).

:class:`FlowClosed` is what a TCP flow's blocking operations raise once its connection is gone.

A module that also registers flows with the gateway (incoming forwards, ``forward_udp``)
extends this protocol next to the flow type it registers, so this module names no flow class.
Everything here is called from greenlets of the gateway's hub; nothing is thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import gevent

    from ..config import Config
    from ..errors import DropCounter
    from ..net.stack import Stack
    from ..net.tcp import TcpConnection

__all__ = ["FlowClosed", "FlowHost"]


class FlowClosed(Exception):
    """A TCP flow's connection to the peer is gone (reset, timed out or fully closed):
    raised by the flow's blocking operations (``TcpFlow.recv_from_peer``, ``send_to_peer``)."""


class FlowHost(Protocol):
    """The gateway as a flow sees it; see the module docstring. ``Gateway`` implements it."""

    @property
    def config(self) -> Config: ...

    @property
    def stack(self) -> Stack: ...

    @property
    def drops(self) -> DropCounter: ...

    def now(self) -> float: ...

    def flush(self) -> None: ...

    def spawn(self, fn: Callable[..., Any], *args: Any) -> gevent.Greenlet: ...

    def flow_finished(self, conn: TcpConnection) -> None: ...
