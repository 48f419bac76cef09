"""Pluggable TCP congestion control: one pure controller object per flow.

Contract: :class:`~wgslirpy.net.congestion.base.CongestionControl` (its module docstring
states the call order the connection must follow). Algorithms, one module each:

* ``bbr`` (default) -- rate-based controller in the spirit of BBR (draft-ietf-ccwg-bbr):
  :mod:`.bbr`. It sets ``pacing_rate``. The default because the gateway splits each
  connection (loss on the tunnel leg is mostly not congestion): it wins the link benchmark
  (benchmarks/links.py) on 50 ms with 1 % loss and on 5 % loss with reordering, where
  CUBIC collapses, and matches it on clean links.
* ``cubic`` -- RFC 9438 CUBIC with HyStart++ (RFC 9406): :mod:`.cubic`.
* ``newreno`` -- RFC 5681 / RFC 3465 / RFC 6582 NewReno: :mod:`.newreno`.

CUBIC and NewReno ignore on_ack's optional ``delivery_rate`` and ``lost``; the BBR-style
controller uses both when given and copes without them.

:func:`make_congestion_control` builds one by name (the ``--congestion`` option); an
unknown name raises :class:`~wgslirpy.errors.ConfigError` listing the choices.
"""

from __future__ import annotations

from wgslirpy.errors import ConfigError
from wgslirpy.net.congestion.base import (
    INFINITE_SSTHRESH,
    MAX_CWND,
    CongestionControl,
    Phase,
)
from wgslirpy.net.congestion.bbr import Bbr
from wgslirpy.net.congestion.cubic import Cubic
from wgslirpy.net.congestion.hystart import HyStartPlusPlus
from wgslirpy.net.congestion.newreno import NewReno

__all__ = [
    "CONGESTION_CONTROLS",
    "Bbr",
    "DEFAULT_CONGESTION_CONTROL",
    "INFINITE_SSTHRESH",
    "MAX_CWND",
    "CongestionControl",
    "Cubic",
    "HyStartPlusPlus",
    "NewReno",
    "Phase",
    "make_congestion_control",
]

_ALGORITHMS: dict[str, type[CongestionControl]] = {cls.name: cls for cls in (Cubic, NewReno, Bbr)}

CONGESTION_CONTROLS: tuple[str, ...] = tuple(_ALGORITHMS)
"""Valid names for :func:`make_congestion_control` (and ``--congestion``)."""

DEFAULT_CONGESTION_CONTROL = "bbr"


def make_congestion_control(name: str, *, mss: int, initial_window: int | None = None) -> CongestionControl:
    """A new controller of algorithm ``name`` (case-insensitive) for one flow.

    Raises :class:`ConfigError` for an unknown name (the message lists the choices) or a
    non-positive ``mss`` / ``initial_window``.
    """
    cls = _ALGORITHMS.get(name.strip().lower()) if isinstance(name, str) else None
    if cls is None:
        raise ConfigError(f"unknown congestion control {name!r}: choose one of {', '.join(CONGESTION_CONTROLS)}")
    return cls(mss=mss, initial_window=initial_window)
