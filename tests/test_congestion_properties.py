"""Invariants of every congestion controller under random event sequences (hypothesis).

RFC 5681 §3.1 (cwnd never below one SMSS, ssthresh at least 2 SMSS once set), plus the
package contract: integer windows, no exception on any input order or odd value.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wgslirpy.net.congestion import (
    CONGESTION_CONTROLS,
    INFINITE_SSTHRESH,
    MAX_CWND,
    make_congestion_control,
)

_rtt = st.one_of(
    st.none(),
    st.floats(min_value=-1.0, max_value=5.0),
    st.sampled_from([0.0, 1e-9, float("inf"), float("nan"), 1e6]),
)

_ack = st.tuples(
    st.just("ack"),
    st.integers(min_value=-10, max_value=1 << 40),  # acked
    st.integers(min_value=0, max_value=1 << 34),  # in_flight
    _rtt,
    st.booleans(),  # app_limited
    st.one_of(st.none(), st.floats(min_value=-1.0, max_value=1e12)),  # delivery_rate
    st.floats(min_value=0.0, max_value=50.0),  # time step
    st.one_of(st.none(), st.integers(min_value=-10, max_value=1 << 34)),  # newly lost bytes
)
_event = st.tuples(
    st.sampled_from(["loss", "rto", "end", "undo", "mss"]),
    st.integers(min_value=-10, max_value=1 << 34),
    st.floats(min_value=0.0, max_value=50.0),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(CONGESTION_CONTROLS),
    mss=st.integers(min_value=1, max_value=9000),
    iw=st.one_of(st.none(), st.integers(min_value=1, max_value=1 << 20)),
    steps=st.lists(st.one_of(_ack, _ack, _ack, _event), max_size=120),
)
def test_invariants_hold_under_any_event_sequence(
    name: str, mss: int, iw: int | None, steps: list[tuple[object, ...]]
) -> None:
    cc = make_congestion_control(name, mss=mss, initial_window=iw)
    now = 0.0
    delivered = 0
    snd_max = 0
    lost_total = 0
    for step in steps:
        kind = step[0]
        if kind == "ack":
            _, acked, in_flight, rtt, app_limited, rate, dt, lost = step
            assert isinstance(acked, int) and isinstance(in_flight, int) and isinstance(dt, float)
            if isinstance(lost, int):
                lost_total += lost  # usually grows; a negative step checks robustness
            now += dt
            delivered += max(acked, 0)
            snd_max = max(snd_max, delivered + in_flight)
            cc.on_ack(
                acked=acked,
                delivered=delivered,
                snd_max=snd_max,
                in_flight=in_flight,
                rtt=rtt,  # type: ignore[arg-type]
                min_rtt=rtt,  # type: ignore[arg-type]
                app_limited=bool(app_limited),
                delivery_rate=rate,  # type: ignore[arg-type]
                lost=None if lost is None else lost_total,
                now=now,
            )
        else:
            _, value, dt = step
            assert isinstance(value, int) and isinstance(dt, float)
            now += dt
            if kind == "loss":
                cc.on_congestion_event(in_flight=value, now=now)
            elif kind == "rto":
                cc.on_rto(in_flight=value, now=now)
            elif kind == "end":
                cc.on_recovery_end(now=now)
            elif kind == "undo":
                cc.undo(now=now)
            else:
                cc.on_mss_change(max(value % 9001, 0))
        assert type(cc.cwnd) is int and type(cc.ssthresh) is int
        assert cc.mss <= cc.cwnd <= MAX_CWND
        assert cc.ssthresh == INFINITE_SSTHRESH or 2 * cc.mss <= cc.ssthresh <= INFINITE_SSTHRESH
        rate_now = cc.pacing_rate
        assert rate_now is None or (rate_now > 0.0 and rate_now < float("inf"))
