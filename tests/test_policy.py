"""Destination policy: rule parsing, first match wins, built-in denials and their overrides."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from wgslirpy.errors import ConfigError
from wgslirpy.net.policy import Policy, PortSet, Rule, parse_ports, parse_rule, parse_rules


@pytest.mark.parametrize(
    "text, ranges",
    [
        ("443", ((443, 443),)),
        ("8000-8100", ((8000, 8100),)),
        ("80,443,8000-8100", ((80, 80), (443, 443), (8000, 8100))),
        (" 0 - 65535 ", ((0, 65535),)),
    ],
)
def test_parse_ports(text: str, ranges: tuple[tuple[int, int], ...]) -> None:
    assert parse_ports(text, "--allow") == PortSet(ranges)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "not a port"),
        ("http", "not a port"),
        ("65536", "out of range"),
        ("90-80", "runs backwards"),
        ("80,", "not a port"),
        ("1-2-3", "not a port"),
        ("-5", "not a port"),
    ],
)
def test_bad_ports_are_one_clear_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        parse_ports(text, "--deny")
    assert str(e.value).startswith("--deny: ") and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "text, net, ports",
    [
        ("10.0.0.0/8", "10.0.0.0/8", None),
        ("10.1.2.3", "10.1.2.3/32", None),
        ("10.1.2.3/8", "10.0.0.0/8", None),  # host bits are ignored
        ("192.0.2.0/24:443", "192.0.2.0/24", "443"),
        ("192.0.2.0/24:80,443,8000-8100", "192.0.2.0/24", "80,443,8000-8100"),
        ("2001:db8::/32", "2001:db8::/32", None),
        ("::1", "::1/128", None),
        ("[2001:db8::/32]:443", "2001:db8::/32", "443"),
        ("[2001:db8::]/32:443", "2001:db8::/32", "443"),
        ("[2001:db8::1]", "2001:db8::1/128", None),
        ("0.0.0.0/0:25", "0.0.0.0/0", "25"),
    ],
)
def test_parse_rule(text: str, net: str, ports: str | None) -> None:
    rule = parse_rule(text, allow=True)
    assert rule.network == ip_network(net)
    assert (str(rule.ports) if rule.ports is not None else None) == ports
    assert rule.allow


@pytest.mark.parametrize(
    "text",
    [
        "",
        "example.com",
        "10.0.0.0/33",
        "[2001:db8::/32",
        "[::1]443",
        "[::1]:",
        "10.0.0.1:",
        "1.2.3.4:x",
        "fe80::1%eth0",
    ],
)
def test_bad_rule_is_one_clear_line(text: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_rule(text, allow=False)
    assert str(e.value).startswith("--deny: ") and "\n" not in str(e.value)


def test_rule_str_round_trips() -> None:
    for text in ("10.0.0.0/8", "192.0.2.0/24:80,443", "[2001:db8::/32]:443-444"):
        rule = parse_rule(text, allow=False)
        assert parse_rule(str(rule).split(" ", 1)[1], allow=False) == rule


@pytest.mark.parametrize(
    "addr, category",
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "loopback"),
        ("::", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:169.254.169.254", "link-local"),
        ("224.0.0.251", "multicast"),
        ("239.1.2.3", "multicast"),
        ("ff02::fb", "multicast"),
        ("255.255.255.255", "broadcast"),
    ],
)
def test_denied_by_default(addr: str, category: str) -> None:
    d = Policy().decide(ip_address(addr), 80)
    assert not d.allowed and d.category == category
    assert "--allow" in d.explain()


@pytest.mark.parametrize("addr", ["192.0.2.1", "2001:db8::1", "10.0.0.1", "100.64.0.1", "::ffff:192.0.2.1"])
def test_everything_else_is_allowed_by_default(addr: str) -> None:
    d = Policy().decide(ip_address(addr), 443)
    assert d.allowed and d.rule is None


def test_allow_overrides_a_default_denial() -> None:
    p = Policy(parse_rules([("allow", "169.254.169.254:80")]))
    assert p.allows(ip_address("169.254.169.254"), 80)
    assert not p.allows(ip_address("169.254.169.254"), 443)  # other ports: still the default
    assert not p.allows(ip_address("169.254.1.1"), 80)


def test_allow_loopback_alias() -> None:
    p = Policy(allow_loopback=True)
    for addr in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "0.0.0.0"):
        assert p.allows(ip_address(addr), 22)
    assert not p.allows(ip_address("169.254.169.254"), 80)  # only loopback


def test_first_match_wins() -> None:
    rules = parse_rules([("deny", "192.0.2.0/24:25"), ("allow", "192.0.2.0/24"), ("deny", "192.0.2.0/24")])
    p = Policy(rules)
    assert not p.allows(ip_address("192.0.2.9"), 25)
    assert p.allows(ip_address("192.0.2.9"), 26)
    d = p.decide(ip_address("192.0.2.9"), 25)
    assert d.rule == Rule(False, ip_network("192.0.2.0/24"), PortSet(((25, 25),)))
    assert d.explain() == "denied by --deny 192.0.2.0/24:25"
    # the other order: the broad deny shadows the allow
    p2 = Policy(parse_rules([("deny", "192.0.2.0/24"), ("allow", "192.0.2.9")]))
    assert not p2.allows(ip_address("192.0.2.9"), 80)


def test_deny_everything_but_web() -> None:
    p = Policy(
        parse_rules(
            [("allow", "0.0.0.0/0:80,443"), ("allow", "[::/0]:80,443"), ("deny", "0.0.0.0/0"), ("deny", "::/0")]
        )
    )
    assert p.allows(ip_address("192.0.2.1"), 443) and p.allows(ip_address("2001:db8::1"), 80)
    assert not p.allows(ip_address("192.0.2.1"), 22) and not p.allows(ip_address("2001:db8::1"), 53)
    # the user's allow-all-web rule also opens loopback web ports: first match wins
    assert p.allows(ip_address("127.0.0.1"), 80)


def test_ipv4_rule_covers_mapped_destinations_and_not_other_families() -> None:
    p = Policy(parse_rules([("deny", "192.0.2.0/24")]))
    assert not p.allows(ip_address("::ffff:192.0.2.5"), 80)
    assert p.allows(ip_address("2001:db8::5"), 80)


def test_decisions_are_cached_boundedly() -> None:
    p = Policy()
    for port in range(Policy._CACHE_MAX * 2):
        p.decide(ip_address("192.0.2.1"), port)
    assert len(p._cache) <= Policy._CACHE_MAX


def test_parse_rules_rejects_unknown_kind() -> None:
    with pytest.raises(ConfigError):
        parse_rules([("permit", "10.0.0.0/8")])


# --- the command line ----------------------------------------------------------------------

_K1 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
_K2 = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="


def test_cli_keeps_the_order_of_allow_and_deny() -> None:
    from wgslirpy.cli import config_from_options, parse_args

    opts = parse_args(
        [
            "-k",
            _K1,
            "-K",
            _K2,
            "--deny",
            "192.0.2.0/24:25",
            "--allow=192.0.2.0/24",
            "--deny",
            "[2001:db8::/32]:1-1023",
            "--max-pending-connects",
            "7",
        ]
    )
    c = config_from_options(opts)
    assert [str(r) for r in c.destination_rules] == [
        "--deny 192.0.2.0/24:25",
        "--allow 192.0.2.0/24",
        "--deny [2001:db8::/32]:1-1023",
    ]
    assert c.max_pending_connects == 7 and c.max_tcp_flows == 65536 and c.max_dns_lookups == 256


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--allow", "10.0.0.0/8:99999"], "--allow: port 99999 is out of range"),
        (["--deny", "nowhere"], "--deny: 'nowhere' is not an address or prefix"),
        (["--max-tcp-flows", "0"], "--max-tcp-flows: must be a positive number"),
        (["--max-reassembly-bytes", "100"], "--max-reassembly-bytes: must be at least"),
    ],
)
def test_cli_bad_rule_or_limit_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from wgslirpy.cli import main

    assert main(["-k", _K1, "-K", _K2, *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
