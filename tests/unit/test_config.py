"""The config layer: examples, defaults, kernel mapping, error reporting, check_config."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from director.config import (
    Config,
    ConfigError,
    DaemonSettings,
    KernelSettings,
    Problem,
    RealServer,
    SorryServer,
    VirtualServer,
    check_config,
    load_config,
    parse_config,
)
from director.config.__main__ import main as config_main
from director.config.agent import AgentConfig
from director.config.checks import CheckConfig
from director.config.fields import netmask_prefix
from director.config.model import SchedFlagName, SchedulerName
from director.desired import compile_table
from director.ipvs.model import (
    SCHED_FLAGS,
    SCHEDULERS,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    SVC_F_SCHED2,
    DestKey,
    Family,
    Forwarding,
    Protocol,
    ServiceKey,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


def problems(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.toml")
    assert info.value.source == "t.toml"
    return info.value.problems


def one_problem(text: str) -> Problem:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


VS = """
[[virtual_server]]
protocol = "tcp"
address = "198.18.0.10"
port = 80
"""

# ---- examples ---------------------------------------------------------------------------------


def test_every_example_is_tested() -> None:
    names = {p.name for p in EXAMPLES.glob("*.toml")}
    # rds-feedback.toml: tests/unit/test_agent_daemon.py
    assert names == {
        "exchange.toml",
        "webfarm.toml",
        "direct-routing.toml",
        "rds-feedback.toml",
        "active-active.toml",  # tests/unit/test_config_bgp.py
    }


def test_exchange_example() -> None:
    config = load_config(EXAMPLES / "exchange.toml")
    keys = [vs.service_key() for vs in config.virtual_servers]
    assert keys == [ServiceKey.mark(80), ServiceKey.mark(1), ServiceKey.mark(2)]
    mail = config.virtual_servers[0]
    assert (mail.scheduler, mail.persistence_timeout, mail.svc_flags) == ("wlc", 600, 1)
    assert mail.persistence_prefix == 32
    assert [rs.dest_key(mail) for rs in mail.real_servers] == [
        DestKey(V4("198.18.1.11"), 0),
        DestKey(V4("198.18.1.12"), 0),
    ]
    assert {rs.fwd(mail) for rs in mail.real_servers} == {Forwarding.NAT}
    rdp = config.virtual_servers[1:]
    assert [vs.real_servers[0].dest_key(vs) for vs in rdp] == [
        DestKey(V4("198.18.1.11"), 3389),
        DestKey(V4("198.18.1.12"), 3389),
    ]
    assert config.kernel.sysctl_items() == [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.vs.conntrack", "1"),
        ("net.ipv4.vs.expire_nodest_conn", "1"),
        ("net.ipv4.vs.expire_quiescent_template", "1"),
    ]
    assert config.kernel.ipvs_timeouts() == (7200, 120, 300)
    table = compile_table(config)
    assert table.count() == (3, 4)
    assert table.services[ServiceKey.mark(80)].timeout == 600


def test_webfarm_example() -> None:
    config = load_config(EXAMPLES / "webfarm.toml")
    web, web6 = config.virtual_servers
    assert web.service_key() == ServiceKey.inet(Protocol.TCP, V4("198.18.0.20"), 80)
    assert web6.service_key() == ServiceKey.inet(Protocol.TCP, V6("2001:db8::20"), 80)
    assert web6.family_enum is Family.INET6 and web6.persistence_prefix == 128
    assert [rs.dest_key(web).port for rs in web.real_servers] == [80, 80, 80]
    assert web.sorry_server is not None
    sorry = web.sorry_server.dest_key(web)
    assert sorry == DestKey(V4("198.18.2.9"), 8080)
    assert ("net.ipv6.conf.all.forwarding", "1") in config.kernel.sysctl_items()
    # the sorry server is in the table only while no real server is up
    assert sorry not in compile_table(config).dests_of(web.service_key())
    key = web.service_key()
    down = {(key, rs.dest_key(web)): False for rs in web.real_servers}
    assert list(compile_table(config, down).dests_of(key)) == [sorry]


def test_direct_routing_example() -> None:
    config = load_config(EXAMPLES / "direct-routing.toml")
    web, dns = config.virtual_servers
    assert web.scheduler == "wrr" and web.svc_flags == 0
    assert [(rs.dest_key(web), rs.fwd(web), rs.weight) for rs in web.real_servers] == [
        (DestKey(V4("198.18.1.31"), 80), Forwarding.DR, 3),
        (DestKey(V4("198.18.1.32"), 80), Forwarding.DR, 1),
        (DestKey(V4("198.18.1.33"), 80), Forwarding.DR, 0),
    ]
    assert dns.service_key() == ServiceKey.inet(Protocol.UDP, V4("198.18.0.53"), 53)
    assert dns.svc_flags == SVC_F_ONEPACKET | SVC_F_SCHED2
    assert [rs.dest_key(dns).port for rs in dns.real_servers] == [53, 53]


# ---- defaults and kernel mapping ----------------------------------------------------------------


def test_empty_file_gives_the_defaults() -> None:
    config = parse_config("")
    assert config.virtual_servers == ()
    d = config.daemon
    assert (d.log_format, d.log_level, d.resync_interval) == ("logfmt", "info", 60.0)
    assert (d.state_dir, d.control_socket) == ("/var/lib/director", "/run/director/control.sock")
    assert d.keep_table_on_stop is True
    assert config.kernel.sysctl_items() == [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.vs.expire_nodest_conn", "1"),
        ("net.ipv4.vs.expire_quiescent_template", "1"),
    ]
    assert config.kernel.ipvs_timeouts() == (None, None, None)
    assert config == Config()


def test_virtual_server_defaults() -> None:
    vs = parse_config(VS + '  [[virtual_server.real_server]]\n  address = "198.18.1.1"\n')
    (service,) = vs.virtual_servers
    assert service.display_name == "tcp/198.18.0.10:80"
    assert (service.scheduler, service.forwarding, service.on_failure) == ("wlc", "nat", "remove")
    assert (service.persistence_timeout, service.svc_flags, service.sorry_server) == (0, 0, None)
    (rs,) = service.real_servers
    assert (rs.name, rs.port, rs.weight, rs.upper_threshold, rs.lower_threshold) == (
        None,
        None,
        1,
        0,
        0,
    )
    assert rs.dest_key(service) == DestKey(V4("198.18.1.1"), 80)
    assert rs.fwd(service) is Forwarding.NAT


def test_fwmark_service_defaults_and_names() -> None:
    config = parse_config(
        "[[virtual_server]]\nfwmark = 7\n"
        '  [[virtual_server.real_server]]\n  address = "198.18.1.1"\n'
        '[[virtual_server]]\nfwmark = 7\nfamily = "ipv6"\n'
        '[[virtual_server]]\nprotocol = "udp"\naddress = "2001:db8::5"\nport = 53\n'
    )
    v4, v6, udp6 = config.virtual_servers
    assert v4.service_key() == ServiceKey.mark(7, Family.INET)
    assert v6.service_key() == ServiceKey.mark(7, Family.INET6)
    assert v4.real_servers[0].dest_key(v4) == DestKey(V4("198.18.1.1"), 0)
    assert [vs.display_name for vs in config.virtual_servers] == [
        "fwmark/7",
        "fwmark/7/ipv6",
        "udp/[2001:db8::5]:53",
    ]
    assert udp6.family_enum is Family.INET6


def test_family_defaults_to_ipv4_and_follows_the_address() -> None:
    config = parse_config(
        "[[virtual_server]]\nfwmark = 7\n"
        '[[virtual_server]]\nprotocol = "tcp"\naddress = "2001:db8::5"\nport = 80\n'
        '[[virtual_server]]\nprotocol = "tcp"\naddress = "2001:db8::6"\nport = 80\n'
        'family = "ipv6"\n'
        '[[virtual_server]]\nprotocol = "tcp"\naddress = "198.18.0.5"\nport = 80\n'
    )
    assert [vs.family for vs in config.virtual_servers] == ["ipv4", "ipv6", "ipv6", "ipv4"]
    built = VirtualServer(protocol="udp", address=V6("2001:db8::7"), port=53)
    assert (built.family, built.family_enum) == ("ipv6", Family.INET6)
    problem = one_problem(
        '[[virtual_server]]\nprotocol = "tcp"\naddress = "2001:db8::5"\nport = 80\n'
        'family = "ipv4"\n'
    )
    assert problem.location == "virtual_server[0].family"
    assert 'expected "ipv6" as address 2001:db8::5 is, found "ipv4"' in problem.message


def test_kernel_settings_map_to_sysctls_in_a_stable_order() -> None:
    config = parse_config(
        "[kernel]\nip_forward = false\nipv6_forwarding = true\nconntrack = false\n"
        "expire_nodest_conn = false\nexpire_quiescent_template = true\n"
        "tcp_timeout = 900\nudp_timeout = 60\n"
        '[kernel.sysctls]\n"net.ipv4.vs.sloppy_tcp" = 1\n"net.ipv4.vs.am_droprate" = "10"\n'
        '"net.ipv4.vs.snat_reroute" = false\n'
    )
    assert config.kernel.sysctl_items() == [
        ("net.ipv4.ip_forward", "0"),
        ("net.ipv6.conf.all.forwarding", "1"),
        ("net.ipv4.vs.conntrack", "0"),
        ("net.ipv4.vs.expire_nodest_conn", "0"),
        ("net.ipv4.vs.expire_quiescent_template", "1"),
        ("net.ipv4.vs.sloppy_tcp", "1"),
        ("net.ipv4.vs.am_droprate", "10"),
        ("net.ipv4.vs.snat_reroute", "0"),
    ]
    assert config.kernel.ipvs_timeouts() == (900, None, 60)


@pytest.mark.parametrize(
    ("service", "mask", "prefix"),
    [
        ('address = "198.18.0.10"', None, 32),
        ('address = "198.18.0.10"', '"255.255.255.0"', 24),
        ('address = "198.18.0.10"', '"255.255.128.0"', 17),
        ('address = "198.18.0.10"', '"0.0.0.0"', 0),
        ('address = "198.18.0.10"', "16", 16),
        ('address = "198.18.0.10"', "0", 0),
        ('address = "2001:db8::10"', None, 128),
        ('address = "2001:db8::10"', "64", 64),
        ('address = "2001:db8::10"', "128", 128),
    ],
)
def test_persistence_netmask_normalizes_to_a_prefix(
    service: str, mask: str | None, prefix: int
) -> None:
    text = (
        f'[[virtual_server]]\nprotocol = "tcp"\n{service}\nport = 443\npersistence_timeout = 60\n'
    )
    if mask is not None:
        text += f"persistence_netmask = {mask}\n"
    (vs,) = parse_config(text).virtual_servers
    assert vs.persistence_prefix == prefix
    assert vs.svc_flags == SVC_F_PERSISTENT
    assert compile_table(parse_config(text)).services[vs.service_key()].netmask == prefix


@given(st.integers(0, 32))
def test_netmask_prefix_of_contiguous_masks(prefix: int) -> None:
    mask = ipaddress.IPv4Network(f"0.0.0.0/{prefix}").netmask
    assert netmask_prefix(str(mask)) == prefix


@given(st.integers(0, 2**32 - 1))
def test_netmask_prefix_refuses_other_masks(bits: int) -> None:
    masks = {(2**32 - 1) ^ (2 ** (32 - prefix) - 1): prefix for prefix in range(33)}
    if bits in masks:
        assert netmask_prefix(str(V4(bits))) == masks[bits]
    else:
        with pytest.raises(ValueError, match=re.escape(str(V4(bits)))):
            netmask_prefix(str(V4(bits)))


def test_fwmark_ipv6_persistence_prefix() -> None:
    text = '[[virtual_server]]\nfwmark = 3\nfamily = "ipv6"\npersistence_timeout = 60\n'
    assert parse_config(text).virtual_servers[0].persistence_prefix == 128
    text += "persistence_netmask = 48\n"
    assert parse_config(text).virtual_servers[0].persistence_prefix == 48


def test_scheduler_flags_map_to_service_flags() -> None:
    text = (
        '[[virtual_server]]\nfwmark = 3\nscheduler = "mh"\n'
        'scheduler_flags = ["mh-fallback", "mh-port"]\n'
    )
    (vs,) = parse_config(text).virtual_servers
    assert vs.svc_flags == SCHED_FLAGS["mh-fallback"][1] | SCHED_FLAGS["mh-port"][1]


def test_literals_match_the_kernel_model() -> None:
    assert set(get_args(SchedulerName)) == SCHEDULERS
    assert set(get_args(SchedFlagName)) == set(SCHED_FLAGS)


def test_models_are_frozen_and_hashable() -> None:
    config = parse_config(VS + '  [[virtual_server.real_server]]\n  address = "198.18.1.1"\n')
    with pytest.raises(ValidationError):
        config.daemon.log_level = "debug"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        config.virtual_servers[0].real_servers[0].weight = 5  # type: ignore[misc]
    assert hash(config) == hash(
        parse_config(VS + '  [[virtual_server.real_server]]\n  address = "198.18.1.1"\n')
    )


def test_python_code_may_use_field_names_but_toml_may_not() -> None:
    rs = RealServer(address=V4("198.18.1.1"))
    vs = VirtualServer(protocol="tcp", address=V4("198.18.0.1"), port=80, real_servers=(rs,))
    assert Config(virtual_servers=(vs,)).virtual_servers[0].real_servers == (rs,)
    problem = one_problem("virtual_servers = []\n")
    assert problem.location == "virtual_servers"
    assert 'did you mean "virtual_server"' in problem.message


# ---- loading and reporting ----------------------------------------------------------------------


def test_all_problems_are_reported_at_once_in_file_order() -> None:
    text = (
        '[daemon]\nlog_level = "loud"\n'  # line 2
        "[[virtual_server]]\n"  # line 3
        'protocol = "tcp"\naddress = "198.18.0.10"\nport = 80\nfwmark = 3\n'
        "[[virtual_server]]\n"  # line 8
        'protocol = "tcp"\naddress = "198.18.0.11"\nport = 80\n'
        "  [[virtual_server.real_server]]\n"
        '  address = "198.18.1.1"\n'
        "  weight = 70000\n"  # line 14
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/director/director.toml")
    found = [(p.location, p.line) for p in info.value.problems]
    assert found == [
        ("daemon.log_level", 2),
        ("virtual_server[0]", 3),
        ("virtual_server[1].real_server[0].weight", 14),
    ]
    assert str(info.value).splitlines() == [
        "/etc/director/director.toml: 3 problems",
        '  daemon.log_level (line 2): expected one of "debug", "info", "warning" or "error", '
        'found "loud"',
        "  virtual_server[0] (line 3): give either protocol+address+port or fwmark, found "
        "protocol, address, port and fwmark",
        "  virtual_server[1].real_server[0].weight (line 14): expected an integer from 0 to "
        "65535, found 70000",
    ]


@pytest.mark.parametrize(
    ("text", "location", "expected"),
    [
        ("[daemon]\nresync_interval = 0\n", "daemon.resync_interval", "greater than 0, found 0"),
        ('[daemon]\nresync_interval = "60"\n', "daemon.resync_interval", 'found "60"'),
        ("[daemon]\nresync_interval = nan\n", "daemon.resync_interval", "found nan"),
        ('[daemon]\nstate_dir = "var/lib"\n', "daemon.state_dir", "absolute path"),
        ('[daemon]\ncontrol_socket = "/' + "x" * 107 + '"\n', "daemon.control_socket", "107"),
        (
            '[daemon]\nkeep_table_on_stop = "yes"\n',
            "daemon.keep_table_on_stop",
            'true or false, found "yes"',
        ),
        (
            '[daemon]\nlog_format = "text"\n',
            "daemon.log_format",
            '"json", "logfmt" or "journal", found "text"',
        ),
        ("[kernel]\nip_forward = 1\n", "kernel.ip_forward", "true or false, found 1"),
        ("[kernel]\ntcp_timeout = 0\n", "kernel.tcp_timeout", "from 1 to 2147483, found 0"),
        ('[kernel.sysctls]\n"net.x" = 1.5\n', 'kernel.sysctls."net.x"', "found 1.5"),
        ("kernel = 3\n", "kernel", "expected a table, found 3"),
        ("virtual_server = 5\n", "virtual_server", "expected an array, found 5"),
        (VS.replace("80", '"80"'), "virtual_server[0].port", 'from 0 to 65535, found "80"'),
        (VS.replace("80", "true"), "virtual_server[0].port", "found true"),
        (VS.replace('"tcp"', '"TCP"'), "virtual_server[0].protocol", 'found "TCP"'),
        (VS.replace("198.18.0.10", "198.18.0.300"), "virtual_server[0].address", "IPv4 or IPv6"),
        (VS.replace("198.18.0.10", "fe80::1%eth0"), "virtual_server[0].address", "fe80::1%eth0"),
        (VS + 'scheduler = "rrr"\n', "virtual_server[0].scheduler", '"wlc"'),
        (
            VS + 'scheduler_flags = ["sh-prot"]\n',
            "virtual_server[0].scheduler_flags[0]",
            '"sh-port"',
        ),
        (VS + "persistence_timeout = -1\n", "virtual_server[0].persistence_timeout", "found -1"),
        (VS + 'name = ""\n', "virtual_server[0].name", "non-empty"),
        (VS + 'on_failure = "drain"\n', "virtual_server[0].on_failure", '"quiesce"'),
        (VS + "sorry_server = 1\n", "virtual_server[0].sorry_server", "expected a table, found 1"),
        (
            VS + 'sorry_server = { address = "198.18.2.1", weight = 0 }\n',
            "virtual_server[0].sorry_server.weight",
            "from 1 to 65535",
        ),
        (
            VS + "[[virtual_server.real_server]]\nport = 8080\n",
            "virtual_server[0].real_server[0].address",
            "required key is missing",
        ),
        (
            VS + '[[virtual_server.real_server]]\naddress = "198.18.1.1"\nwieght = 2\n',
            "virtual_server[0].real_server[0].wieght",
            'unknown key "wieght"; did you mean "weight"?',
        ),
        ("[deamon]\n", "deamon", 'did you mean "daemon"'),
        (VS + "colour = 1\n", "virtual_server[0].colour", "expected one of: name, protocol"),
        (
            "[[virtual_server]]\nfwmark = 0\n",
            "virtual_server[0].fwmark",
            "from 1 to 4294967295, found 0",
        ),
        (
            VS + 'persistence_timeout = 1\npersistence_netmask = "/24"\n',
            "virtual_server[0].persistence_netmask",
            'found "/24"',
        ),
    ],
)
def test_field_errors_say_what_was_expected_and_found(
    text: str, location: str, expected: str
) -> None:
    problem = one_problem(text)
    assert problem.location == location
    assert expected in problem.message
    for jargon in ("Input should", "type=", "https://", "pydantic", "Value error"):
        assert jargon not in str(problem)


def test_toml_syntax_error_has_its_line_and_column() -> None:
    problem = one_problem('[daemon]\nlog_level = "info"\nresync_interval 60\n')
    assert problem.line == 3
    assert problem.location == ""
    assert problem.message.startswith("invalid TOML: expected '='")
    assert "column 17" in problem.message
    assert str(problem).startswith("line 3: invalid TOML")


def test_toml_error_at_the_end_of_the_file() -> None:
    problem = one_problem('[daemon]\nlog_level = "info')
    assert "invalid TOML" in problem.message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    assert str(info.value) == f"{path}: cannot read the config: no such file"


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="it is a directory"):
        load_config(tmp_path)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[daemon]\nlog_level = "\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)


def test_load_config_accepts_str_paths(tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    path.write_text(VS)
    assert load_config(str(path)) == load_config(path) == parse_config(VS)


def test_config_error_source_defaults_to_string() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("x = 1")
    assert info.value.source == "<string>"
    assert str(info.value).startswith("<string>: 1 problem\n  x (line 1): unknown key")


# ---- check_config -----------------------------------------------------------------------------


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = EXAMPLES / "exchange.toml"
    assert check_config(path) == (True, f"{path}: OK (3 virtual services, 4 real servers)")
    assert config_main([str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: OK (3 virtual services, 4 real servers)\n"
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert check_config(empty) == (True, f"{empty}: OK (0 virtual services, 0 real servers)")


def test_check_config_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(VS + "port = 81\n")
    ok, message = check_config(path)
    assert not ok
    assert message.startswith(f"{path}: 1 problem")
    assert config_main([str(path)]) == 1
    assert "invalid TOML" in capsys.readouterr().err
    ok, message = check_config(tmp_path / "missing.toml")
    assert not ok and "no such file" in message


# ---- the reference document -----------------------------------------------------------------

REFERENCE = EXAMPLES.parent / "configuration.md"


def with_peer_key(text: str, tmp: Path) -> str:
    """``text`` with the [peer_check] example's key file replaced by one that exists."""
    key = tmp / "peer.key"
    key.write_bytes(b"k" * 32)
    key.chmod(0o600)
    return text.replace('"/etc/director/peer.key"', f'"{key}"')


def test_reference_snippets_form_a_valid_config(tmp_path: Path) -> None:
    text = with_peer_key(REFERENCE.read_text(), tmp_path)
    snippets = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(snippets) >= 4
    config = parse_config("\n".join(snippets), str(REFERENCE))
    assert [vs.display_name for vs in config.virtual_servers] == ["web", "mail"]
    assert config.virtual_servers[0].persistence_prefix == 24


@pytest.mark.parametrize(
    "model",
    [
        DaemonSettings,
        KernelSettings,
        VirtualServer,
        RealServer,
        SorryServer,
        CheckConfig,
        AgentConfig,
    ],
)
def test_reference_documents_every_key(model: type[BaseModel]) -> None:
    text = REFERENCE.read_text()
    for name, field in model.model_fields.items():
        key = field.alias or name
        assert f"| `{key}` |" in text or (model is SorryServer and f"`{key}`" in text), key
