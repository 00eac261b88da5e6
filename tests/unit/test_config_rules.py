"""Checks across fields: each rule, where it reports and what it says."""

from __future__ import annotations

import pytest

from director.config import ConfigError, Problem, parse_config


def problems(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.toml")
    return info.value.problems


def one_problem(text: str) -> Problem:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def service(*lines: str, key: str = 'protocol = "tcp"\naddress = "198.18.0.10"\nport = 80') -> str:
    return "[[virtual_server]]\n" + key + "\n" + "".join(line + "\n" for line in lines)


def rs(address: str = "198.18.1.1", *lines: str) -> str:
    return f'[[virtual_server.real_server]]\naddress = "{address}"\n' + "".join(
        line + "\n" for line in lines
    )


ALL_THREE = 'protocol = "tcp"\naddress = "198.18.0.10"\nport = 80'

# Each case: TOML text, the location of the one problem, words its message must contain.
CASES = [
    # exactly one of protocol+address+port or fwmark
    (
        service(key=ALL_THREE + "\nfwmark = 1"),
        "virtual_server[0]",
        "found protocol, address, port and fwmark",
    ),
    (
        service(key='address = "198.18.0.10"'),
        "virtual_server[0]",
        "found only address (protocol and port missing)",
    ),
    (
        service(key='protocol = "udp"\naddress = "198.18.0.10"'),
        "virtual_server[0]",
        "found only protocol and address (port missing)",
    ),
    (service(key='scheduler = "rr"'), "virtual_server[0]", "found none of them"),
    (service(key="fwmark = 2\nport = 80"), "virtual_server[0]", "found port and fwmark"),
    # port 0 is only for persistent "all ports" services
    (
        service(key=ALL_THREE.replace("80", "0")),
        "virtual_server[0].port",
        "needs persistence_timeout > 0",
    ),
    # family must match the address
    (
        service('family = "ipv6"'),
        "virtual_server[0].family",
        'expected "ipv4" as address 198.18.0.10 is, found "ipv6"',
    ),
    # one_packet only for udp and fwmark services
    (service("one_packet = true"), "virtual_server[0].one_packet", 'protocol "tcp"'),
    (
        service("one_packet = true", key=ALL_THREE.replace("tcp", "sctp")),
        "virtual_server[0].one_packet",
        'protocol "sctp"',
    ),
    # scheduler flags belong to one scheduler
    (
        service('scheduler_flags = ["sh-port"]'),
        "virtual_server[0].scheduler_flags[0]",
        'expected scheduler = "sh", found scheduler = "wlc"',
    ),
    (
        service('scheduler = "sh"', 'scheduler_flags = ["sh-port", "mh-fallback"]'),
        "virtual_server[0].scheduler_flags[1]",
        "mh scheduler",
    ),
    # persistence netmask
    (
        service("persistence_netmask = 24"),
        "virtual_server[0].persistence_netmask",
        "expected persistence_timeout > 0",
    ),
    (
        service("persistence_timeout = 60", 'persistence_netmask = "255.0.255.0"'),
        "virtual_server[0].persistence_netmask",
        'contiguous dotted netmask like "255.255.255.0", found "255.0.255.0"',
    ),
    (
        service("persistence_timeout = 60", "persistence_netmask = 33"),
        "virtual_server[0].persistence_netmask",
        "from 0 to 32 for an IPv4 service, found 33",
    ),
    (
        service("persistence_timeout = 60", "persistence_netmask = 129"),
        "virtual_server[0].persistence_netmask",
        "found 129",
    ),
    (
        service(
            "persistence_timeout = 60",
            'persistence_netmask = "255.255.255.0"',
            key=ALL_THREE.replace("198.18.0.10", "2001:db8::10"),
        ),
        "virtual_server[0].persistence_netmask",
        "IPv6 service (a dotted mask is IPv4 only, and the kernel refuses 0), "
        'found "255.255.255.0"',
    ),
    (
        service(
            "persistence_timeout = 60",
            "persistence_netmask = 0",
            key=ALL_THREE.replace("198.18.0.10", "2001:db8::10"),
        ),
        "virtual_server[0].persistence_netmask",
        "found 0",
    ),
    (
        service(
            'family = "ipv6"',
            "persistence_timeout = 60",
            "persistence_netmask = 0",
            key="fwmark = 4",
        ),
        "virtual_server[0].persistence_netmask",
        "from 1 to 128",
    ),
    # real servers: duplicates (the default port counts), family, dr/tun ports, thresholds
    (
        service() + rs() + rs("198.18.1.1", "port = 80"),
        "virtual_server[0].real_server[1]",
        "found 198.18.1.1:80 again (also real_server[0])",
    ),
    (
        service() + rs("2001:db8::1"),
        "virtual_server[0].real_server[0].address",
        'expected an ipv4 address like the service\'s (only forwarding = "tun" can mix '
        'families), found 2001:db8::1 with forwarding = "nat"',
    ),
    (
        service('forwarding = "dr"') + rs("198.18.1.1", "port = 8080"),
        "virtual_server[0].real_server[0].port",
        'with forwarding = "dr" the packet keeps the service\'s port, which the kernel uses: '
        "expected no port or 80, found 8080",
    ),
    (
        service() + rs("198.18.1.1", 'forwarding = "tun"', "port = 81"),
        "virtual_server[0].real_server[0].port",
        "expected no port or 80, found 81",
    ),
    (
        service(key="fwmark = 5") + rs("198.18.1.1", 'forwarding = "dr"', "port = 80"),
        "virtual_server[0].real_server[0].port",
        "expected no port or 0, found 80",
    ),
    (
        service() + rs("198.18.1.1", "upper_threshold = 10", "lower_threshold = 11"),
        "virtual_server[0].real_server[0].lower_threshold",
        "expected lower_threshold at most upper_threshold (10), found 11",
    ),
    (
        service() + rs("198.18.1.1", "lower_threshold = 5"),
        "virtual_server[0].real_server[0].lower_threshold",
        "the kernel refuses any lower threshold when upper is 0",
    ),
    # the sorry server: not a real server, same family and port rules
    (
        service('sorry_server = { address = "198.18.1.1" }') + rs(),
        "virtual_server[0].sorry_server",
        "expected a sorry server that is not a real server, found 198.18.1.1:80 "
        "(also real_server[0])",
    ),
    (
        service('sorry_server = { address = "2001:db8::9", port = 80 }'),
        "virtual_server[0].sorry_server.address",
        "expected an ipv4 address",
    ),
    (
        service('sorry_server = { address = "198.18.2.9", port = 8080, forwarding = "dr" }'),
        "virtual_server[0].sorry_server.port",
        "expected no port or 80, found 8080",
    ),
    # services: duplicate keys (addresses compared as addresses) and names
    (
        service() + service(),
        "virtual_server[1]",
        "found TCP 198.18.0.10:80 again (also virtual_server[0])",
    ),
    (
        service(key=ALL_THREE.replace("198.18.0.10", "2001:db8::1"))
        + service(key=ALL_THREE.replace("198.18.0.10", "2001:0db8:0::0001")),
        "virtual_server[1]",
        "TCP [2001:db8::1]:80 again",
    ),
    (
        service(key="fwmark = 9") + service(key="fwmark = 9"),
        "virtual_server[1]",
        "found FWM 9 ipv4 again",
    ),
    (
        service('name = "web"') + service('name = "web"', key=ALL_THREE.replace("80", "81")),
        "virtual_server[1].name",
        'expected a unique name, found "web" again (also virtual_server[0])',
    ),
    (
        service('name = "tcp/198.18.0.10:81"') + service(key=ALL_THREE.replace("80", "81")),
        "virtual_server[1]",
        'found "tcp/198.18.0.10:81" again',
    ),
    # kernel.sysctls names
    (
        '[kernel.sysctls]\n"kernel.panic" = 1\n',
        'kernel.sysctls."kernel.panic"',
        'expected a sysctl name starting with "net." without "/" or "..", found "kernel.panic"',
    ),
    (
        '[kernel.sysctls]\n"net.ipv4/../../x" = 1\n',
        'kernel.sysctls."net.ipv4/../../x"',
        'found "net.ipv4/../../x"',
    ),
    ('[kernel.sysctls]\n"net..ipv4" = 1\n', 'kernel.sysctls."net..ipv4"', "starting with"),
    (
        '[kernel.sysctls]\n"net.ipv4.vs.a b" = 1\n',
        'kernel.sysctls."net.ipv4.vs.a b"',
        'without spaces or control characters, found "net.ipv4.vs.a b"',
    ),
    (
        '[kernel.sysctls]\n"net.ipv4.vs.a\\u0000" = 1\n',
        'kernel.sysctls."net.ipv4.vs.a\\u0000"',
        "without spaces or control characters",
    ),
    (
        '[kernel.sysctls]\n"net.ipv4.vs.x" = "1\\n2"\n',
        'kernel.sysctls."net.ipv4.vs.x"',
        'expected a one-line value without control characters, found "1\\n2"',
    ),
    (
        '[kernel.sysctls]\n"net.ipv4.ip_forward" = 1\n',
        'kernel.sysctls."net.ipv4.ip_forward"',
        "set net.ipv4.ip_forward with kernel.ip_forward",
    ),
]


@pytest.mark.parametrize(("text", "location", "words"), CASES)
def test_rule(text: str, location: str, words: str) -> None:
    problem = one_problem(text)
    assert (problem.location, words in problem.message) == (location, True), problem
    assert problem.line is not None


@pytest.mark.parametrize(
    "text",
    [
        service("persistence_timeout = 300", key=ALL_THREE.replace("80", "0")),
        service("one_packet = true", key=ALL_THREE.replace("tcp", "udp")),
        service("one_packet = true", key="fwmark = 3"),
        service('scheduler = "sh"', 'scheduler_flags = ["sh-port", "sh-fallback"]'),
        service('family = "ipv4"'),
        service("persistence_timeout = 60", 'persistence_netmask = "255.255.255.255"'),
        service() + rs("2001:db8::1", 'forwarding = "tun"'),
        service('forwarding = "dr"') + rs("198.18.1.1", "port = 80") + rs("198.18.1.2"),
        service(key="fwmark = 5") + rs("198.18.1.1", 'forwarding = "dr"', "port = 0"),
        service() + rs("198.18.1.1", "port = 8080") + rs("198.18.1.1", "port = 8081"),
        service('sorry_server = { address = "198.18.1.1", port = 8080 }') + rs(),
        service() + rs("198.18.1.1", "upper_threshold = 10", "lower_threshold = 10"),
        service(key="fwmark = 9") + service('family = "ipv6"', key="fwmark = 9"),
        service(key=ALL_THREE.replace("tcp", "udp")) + service(),
        service('name = "a"') + service('name = "b"', key=ALL_THREE.replace("80", "81")),
        '[kernel.sysctls]\n"net.ipv4.tcp_rmem" = "4096\\t87380\\t6291456"\n',
    ],
)
def test_valid_neighbours_of_the_rules(text: str) -> None:
    parse_config(text)


def test_every_rule_in_one_service_is_reported() -> None:
    text = (
        service(
            'family = "ipv6"',
            "one_packet = true",
            'scheduler_flags = ["mh-port"]',
            "persistence_netmask = 24",
        )
        + rs("198.18.1.1", "lower_threshold = 3")
        + rs("198.18.1.1")
    )
    assert [p.location for p in problems(text)] == [
        "virtual_server[0].family",
        "virtual_server[0].one_packet",
        "virtual_server[0].scheduler_flags[0]",
        "virtual_server[0].persistence_netmask",
        "virtual_server[0].real_server[0].lower_threshold",
        "virtual_server[0].real_server[1]",
    ]


def test_key_problem_is_reported_along_with_field_errors_of_the_same_service() -> None:
    text = service("weight = 2", key='address = "198.18.0.10"\nfwmark = 1') + rs("x")
    assert [p.location for p in problems(text)] == [
        "virtual_server[0]",
        "virtual_server[0].weight",
        "virtual_server[0].real_server[0].address",
    ]


def test_duplicate_services_are_reported_along_with_unrelated_errors() -> None:
    text = service() + service() + "[daemon]\nlog_level = 3\n"
    assert [p.location for p in problems(text)] == ["virtual_server[1]", "daemon.log_level"]
    text = service() + service('scheduler = "nope"') + service()
    assert [p.location for p in problems(text)] == [
        "virtual_server[1].scheduler",
        "virtual_server[2]",
    ]


def test_duplicates_before_an_invalid_service() -> None:
    text = service() + service() + service('family = "ipv6"', key="fwmark = 1") + rs()
    assert [p.location for p in problems(text)] == [
        "virtual_server[1]",
        "virtual_server[2].real_server[0].address",
    ]


def test_service_rules_still_run_when_only_its_servers_or_unknown_keys_are_invalid() -> None:
    text = service("one_packet = true", "colour = 1", 'sorry_server = { address = "x" }') + rs(
        "198.18.1.1", "weight = -1"
    )
    assert [p.location for p in problems(text)] == [
        "virtual_server[0].one_packet",
        "virtual_server[0].colour",
        "virtual_server[0].sorry_server.address",
        "virtual_server[0].real_server[0].weight",
    ]


def test_no_rule_reads_the_default_of_an_invalid_key() -> None:
    # an invalid scheduler must not make "sh-port" look like a mismatch with the default "wlc"
    text = service('scheduler = "shh"', 'scheduler_flags = ["sh-port"]')
    assert [p.location for p in problems(text)] == ["virtual_server[0].scheduler"]
    # an invalid persistence_timeout must not make port 0 look non-persistent
    text = service('persistence_timeout = "600"', key=ALL_THREE.replace("80", "0"))
    assert [p.location for p in problems(text)] == ["virtual_server[0].persistence_timeout"]
    # an invalid port is still a port: no "port missing"
    text = service(key=ALL_THREE.replace("80", "70000"))
    assert [p.location for p in problems(text)] == ["virtual_server[0].port"]
