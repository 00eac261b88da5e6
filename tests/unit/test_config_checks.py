"""``check`` tables: defaults, per-server overrides, and keys that don't belong."""

from __future__ import annotations

import pytest

from director.config import ConfigError, parse_config
from director.config.checks import CheckConfig, merged_problems

BASE = """
[[virtual_server]]
protocol = "tcp"
address = "198.18.0.10"
port = 443
{check}
  [[virtual_server.real_server]]
  address = "198.18.1.11"
{rs1}
  [[virtual_server.real_server]]
  address = "198.18.1.12"
  port = 8443
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return [f"{p.location}: {p.message}" for p in info.value.problems]


def test_service_check_with_defaults_and_a_server_override() -> None:
    config = parse_config(
        BASE.format(
            check='  [virtual_server.check]\n  type = "https"\n  verify = false\n'
            '  expect_status = [200, "300-302"]',
            rs1='  check = { host = "mail.example.com", attempts = 2 }',
        )
    )
    vs = config.virtual_servers[0]
    one, two = (rs.health_check(vs) for rs in vs.real_servers)
    assert one is not None
    assert two is not None
    assert (one.type, one.port, one.host, one.attempts, one.verify) == (
        "https",
        443,
        "mail.example.com",
        2,
        False,
    )
    assert (two.port, two.host, two.attempts) == (8443, None, 1)
    assert one.expect_status == ((200, 200), (300, 302))
    assert (one.interval, one.timeout, one.rise, one.fall, one.initial) == (5.0, 3.0, 2, 3, "up")


def test_no_check_or_type_none_means_always_up() -> None:
    config = parse_config(BASE.format(check="", rs1='  check = { type = "none" }'))
    vs = config.virtual_servers[0]
    assert [rs.health_check(vs) for rs in vs.real_servers] == [None, None]


def test_keys_of_other_kinds_are_all_reported() -> None:
    found = problems(
        BASE.format(
            check='  [virtual_server.check]\n  type = "tcp"\n  path = "/owa"\n'
            "  interval = 1\n  timeout = 2",
            rs1='  check = { vdirs = ["owa"] }',
        )
    )
    assert found == [
        "virtual_server[0].check.path: path applies to http, https checks, found it on a check "
        'of type "tcp"',
        "virtual_server[0].check.timeout: expected timeout at most interval (1.0 s), found 2.0 s",
        "virtual_server[0].real_server[0].check.vdirs: vdirs applies to exchange checks, found "
        'it on a check of type "tcp"',
    ]


def test_bad_values_in_check_tables() -> None:
    found = problems(
        BASE.format(
            check='  [virtual_server.check]\n  type = "http"\n  body_regex = "("',
            rs1='  check = { command = "check.sh", expect_status = ["2xx"] }',
        )
    )
    text = "\n".join(found)
    assert "virtual_server[0].check.body_regex: expected a valid regular expression" in text
    assert "virtual_server[0].real_server[0].check.command: expected a command as a list" in text
    assert 'expect_status: expected status codes like 200 or "200-399"' in text


def test_script_needs_a_command_and_fwmark_servers_need_a_port() -> None:
    found = problems(
        """
[[virtual_server]]
fwmark = 80
  [virtual_server.check]
  type = "tcp"
  [[virtual_server.real_server]]
  address = "198.18.1.11"
  [[virtual_server.real_server]]
  address = "198.18.1.12"
  check = { type = "script" }
"""
    )
    assert any("real_server[0].check.port" in p and "needs a port" in p for p in found)
    assert any("real_server[1].check.command" in p and "needs command" in p for p in found)


def test_a_server_check_without_any_type_is_an_error() -> None:
    found = problems(BASE.format(check="", rs1="  check = { port = 8080 }"))
    assert found == [
        "virtual_server[0].real_server[0].check.type: a check needs a type: tcp, http, https, "
        "rdp, exchange, smtp, script or none"
    ]


def test_regexes_re2_cannot_run_are_refused_with_the_reason() -> None:
    found = problems(
        BASE.format(
            check='  [virtual_server.check]\n  type = "http"\n  body_regex = "(a)\\\\1"',
            rs1='  check = { type = "tcp", send = "x", expect = "^(?=250)", expect_regex = true }',
        )
    )
    assert found == [
        "virtual_server[0].check.body_regex: expected a valid regular expression that RE2 can "
        'run (linear time), found "(a)\\\\1": \\1 is a backreference, which a linear-time engine '
        "(RE2) cannot match",
        "virtual_server[0].real_server[0].check.expect: expected a valid regular expression "
        'that RE2 can run (linear time), found "^(?=250)": (?=...) is a lookahead, which a '
        "linear-time engine (RE2) cannot match",
    ]
    # the same text without expect_regex is bytes to look for, not a pattern
    parse_config(
        BASE.format(check="", rs1='  check = { type = "tcp", send = "x", expect = "^(?=250)" }')
    )


def test_an_expect_from_one_level_and_expect_regex_from_the_other() -> None:
    base = CheckConfig(type="tcp", expect="^250", expect_regex=True)
    table = base.merged(CheckConfig(expect="(a)\\1"))
    assert [loc for loc, _ in merged_problems(table)] == [("expect",)]
    assert merged_problems(base) == []
    text = (
        '[[virtual_server]]\nprotocol = "tcp"\naddress = "198.18.0.20"\nport = 25\n'
        '[virtual_server.check]\ntype = "tcp"\nexpect_regex = true\n'
        '[[virtual_server.real_server]]\naddress = "198.18.1.21"\n'
        'check = { expect = "(a)\\\\1" }\n'
    )
    with pytest.raises(ConfigError) as refused:
        parse_config(text)
    assert "real_server[0].check.expect" in str(refused.value)
    assert "backreference" in str(refused.value)


def test_script_users_must_exist() -> None:
    config = parse_config(
        '[daemon]\nscript_user = "nobody"\n'
        + BASE.format(
            check='  [virtual_server.check]\n  type = "script"\n  command = ["/bin/true"]',
            rs1='  check = { user = "nobody:nogroup" }',
        )
    )
    assert config.daemon.script_user == "nobody"
    vs = config.virtual_servers[0]
    first = vs.real_servers[0].health_check(vs)
    assert first is not None and first.user == "nobody:nogroup"
    found = problems(
        '[daemon]\nscript_user = "no-such-user-here"\n'
        + BASE.format(
            check='  [virtual_server.check]\n  type = "tcp"\n  user = "nobody"',
            rs1='  check = { type = "script", command = ["/bin/true"], user = "nobody:nonesuch" }',
        )
    )
    assert found == [
        'daemon.script_user: expected a user, or "USER:GROUP", that exists on this machine, '
        'like "nobody" or "nobody:nogroup", found "no-such-user-here" (no user '
        "'no-such-user-here' on this machine)",
        "virtual_server[0].check.user: user applies to script checks, found it on a check of "
        'type "tcp"',
        'virtual_server[0].real_server[0].check.user: expected a user, or "USER:GROUP", that '
        'exists on this machine, like "nobody" or "nobody:nogroup", found "nobody:nonesuch" '
        "(no group 'nonesuch' on this machine)",
    ]
