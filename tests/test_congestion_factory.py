"""Congestion-control factory (wgslirpy.net.congestion): names, default, errors."""

from __future__ import annotations

import pytest

from wgslirpy.errors import ConfigError
from wgslirpy.net.congestion import (
    CONGESTION_CONTROLS,
    DEFAULT_CONGESTION_CONTROL,
    CongestionControl,
    Cubic,
    NewReno,
    make_congestion_control,
)


def test_names_and_default() -> None:
    assert "cubic" in CONGESTION_CONTROLS and "newreno" in CONGESTION_CONTROLS
    assert DEFAULT_CONGESTION_CONTROL == "bbr"
    assert DEFAULT_CONGESTION_CONTROL in CONGESTION_CONTROLS


@pytest.mark.parametrize("name", CONGESTION_CONTROLS)
def test_every_name_builds_its_algorithm(name: str) -> None:
    cc = make_congestion_control(name, mss=1200)
    assert isinstance(cc, CongestionControl)
    assert cc.name == name
    assert cc.mss == 1200 and cc.cwnd == 12000


def test_names_are_case_insensitive_and_initial_window_passes_through() -> None:
    assert isinstance(make_congestion_control(" CUBIC ", mss=1000), Cubic)
    cc = make_congestion_control("NewReno", mss=1000, initial_window=4000)
    assert isinstance(cc, NewReno) and cc.cwnd == 4000


@pytest.mark.parametrize("name", ["vegas", "", "cubic2"])
def test_unknown_name_is_config_error_listing_the_choices(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_congestion_control(name, mss=1000)
    message = str(info.value)
    assert repr(name) in message
    for choice in CONGESTION_CONTROLS:
        assert choice in message


def test_bad_mss_is_config_error() -> None:
    with pytest.raises(ConfigError):
        make_congestion_control("cubic", mss=0)


def test_only_the_rate_based_controller_bypasses_prr_in_recovery() -> None:
    """RFC 6937 PRR sizes recovery for the loss-based controllers; the BBR-style one sizes
    it by its own model-based window (as Linux BBR does)."""
    assert make_congestion_control("cubic", mss=1000).prr_in_recovery
    assert make_congestion_control("newreno", mss=1000).prr_in_recovery
    assert not make_congestion_control("bbr", mss=1000).prr_in_recovery
