"""Tunnel forwarding keys (tunnel_type, tunnel_port, tunnel_checksum): validation, desired state,
plan. Pure, on the in-memory kernel (the real kernel: tests/vm/test_ipvs_netlink.py)."""

from __future__ import annotations

import errno
import ipaddress
from pathlib import Path

import pytest

from director.config import ConfigError, Problem, parse_config
from director.desired import compile_table
from director.ipvs.memory import MemoryIPVS
from director.ipvs.model import (
    TUN_F_CSUM,
    TUN_F_NOCSUM,
    TUN_F_REMCSUM,
    Dest,
    DestKey,
    Forwarding,
    Protocol,
    ServiceKey,
    TunnelType,
)
from director.ipvs.ops import AddDest, AddService, EditDest
from director.reconcile.plan import plan

KEY = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.0.10"), 80)


def rs_key(last: int) -> DestKey:
    return DestKey.of(ipaddress.IPv4Address(f"198.18.1.{last}"), 80)


def service(*lines: str, servers: str = "") -> str:
    head = '[[virtual_server]]\nprotocol = "tcp"\naddress = "198.18.0.10"\nport = 80\n'
    return head + "".join(line + "\n" for line in lines) + servers


def rs(last: int, *lines: str) -> str:
    body = "".join(line + "\n" for line in lines)
    return f'[[virtual_server.real_server]]\naddress = "198.18.1.{last}"\n{body}'


def problems(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.toml")
    return info.value.problems


def dests(text: str) -> dict[DestKey, Dest]:
    return compile_table(parse_config(text)).dests[KEY]


# -- validation ----------------------------------------------------------------------------------

BAD = [
    # tunnel keys need forwarding = "tun"
    (
        service('tunnel_type = "gue"', "tunnel_port = 6080"),
        ["virtual_server[0].tunnel_type", "virtual_server[0].tunnel_port"],
        'tunnel_type is for forwarding = "tun": expected no tunnel_type with forwarding = "nat", '
        'found "gue"',
    ),
    (
        service('forwarding = "dr"', servers=rs(11, 'tunnel_checksum = "csum"')),
        ["virtual_server[0].real_server[0].tunnel_checksum"],
        'expected no tunnel_checksum with forwarding = "dr", found "csum"',
    ),
    # GUE needs a port, and only GUE takes one
    (
        service('forwarding = "tun"', 'tunnel_type = "gue"', servers=rs(11)),
        ["virtual_server[0].tunnel_port"],
        "expected tunnel_port (the UDP port the real servers take GUE on, e.g. 6080) with "
        'tunnel_type = "gue", found none',
    ),
    (
        service('forwarding = "tun"', servers=rs(11, "tunnel_port = 6080")),
        ["virtual_server[0].real_server[0].tunnel_port"],
        'tunnel_port is the UDP port of GUE: expected no tunnel_port with tunnel_type = "ipip", '
        "found 6080",
    ),
    (
        service('forwarding = "tun"', 'tunnel_type = "gre"', "tunnel_port = 6080"),
        ["virtual_server[0].tunnel_port"],
        'expected no tunnel_port with tunnel_type = "gre", found 6080',
    ),
    # a server that names its own type takes none of the service's keys (not its port)
    (
        service(
            'forwarding = "tun"',
            'tunnel_type = "gue"',
            "tunnel_port = 6080",
            servers=rs(11, 'tunnel_type = "gue"'),
        ),
        ["virtual_server[0].real_server[0].tunnel_port"],
        'with tunnel_type = "gue", found none',
    ),
    # checksum options by type
    (
        service('forwarding = "tun"', 'tunnel_type = "gre"', 'tunnel_checksum = "remcsum"'),
        ["virtual_server[0].tunnel_checksum"],
        'expected "none" or "csum" with tunnel_type = "gre"',
    ),
    (
        service('forwarding = "tun"', servers=rs(11, 'tunnel_checksum = "csum"')),
        ["virtual_server[0].real_server[0].tunnel_checksum"],
        'expected "none" with tunnel_type = "ipip"',
    ),
    # field errors
    (
        service('forwarding = "tun"', 'tunnel_type = "vxlan"'),
        ["virtual_server[0].tunnel_type"],
        '"vxlan"',
    ),
    (
        service('forwarding = "tun"', 'tunnel_type = "gue"', "tunnel_port = 0"),
        ["virtual_server[0].tunnel_port"],
        "expected a UDP port from 1 to 65535, found 0",
    ),
    (
        service('forwarding = "tun"', 'tunnel_checksum = "yes"'),
        ["virtual_server[0].tunnel_checksum"],
        '"yes"',
    ),
]


@pytest.mark.parametrize(("text", "locations", "words"), BAD)
def test_bad_tunnel_keys_name_the_key_what_was_expected_and_found(
    text: str, locations: list[str], words: str
) -> None:
    found = problems(text)
    assert [p.location for p in found] == locations, found
    assert words in found[0].message, found[0].message
    assert all(p.line is not None for p in found)


def test_sorry_server_tunnel_keys_are_checked_too() -> None:
    text = service(
        'forwarding = "tun"',
        'sorry_server = { address = "198.18.2.9", tunnel_type = "gue" }',
        servers=rs(11),
    )
    [problem] = problems(text)
    assert problem.location == "virtual_server[0].sorry_server.tunnel_port"


@pytest.mark.parametrize(
    "text",
    [
        service('forwarding = "tun"', servers=rs(11)),
        service('forwarding = "tun"', 'tunnel_type = "ipip"', 'tunnel_checksum = "none"'),
        service('forwarding = "tun"', 'tunnel_type = "gre"', 'tunnel_checksum = "csum"'),
        service('forwarding = "tun"', 'tunnel_type = "gue"', "tunnel_port = 6080"),
        # GUE on a port of each real server's own: nothing takes the service's
        service(
            'forwarding = "tun"',
            'tunnel_type = "gue"',
            servers=rs(11, "tunnel_port = 6080") + rs(12, "tunnel_port = 6081"),
        ),
        # one tunnel server in a DR service
        service('forwarding = "dr"', servers=rs(11, 'forwarding = "tun"', 'tunnel_type = "gre"')),
    ],
)
def test_valid_neighbours(text: str) -> None:
    parse_config(text)


# -- desired state -------------------------------------------------------------------------------


def test_service_keys_reach_every_tunnel_server_and_a_server_overrides_them() -> None:
    text = service(
        'forwarding = "tun"',
        'tunnel_type = "gue"',
        "tunnel_port = 6080",
        'tunnel_checksum = "remcsum"',
        servers=rs(11)
        + rs(12, "tunnel_port = 5555", 'tunnel_checksum = "csum"')
        + rs(13, 'tunnel_type = "gre"', 'tunnel_checksum = "csum"')
        + rs(14, 'tunnel_type = "ipip"')
        + rs(15, 'forwarding = "dr"'),
    )
    got = {k: (d.fwd_method, d.tun_type, d.tun_port, d.tun_flags) for k, d in dests(text).items()}
    tun = Forwarding.TUNNEL
    assert got == {
        rs_key(11): (tun, TunnelType.GUE, 6080, TUN_F_REMCSUM),
        rs_key(12): (tun, TunnelType.GUE, 5555, TUN_F_CSUM),
        rs_key(13): (tun, TunnelType.GRE, 0, TUN_F_CSUM),
        rs_key(14): (tun, TunnelType.IPIP, 0, TUN_F_NOCSUM),
        rs_key(15): (Forwarding.DR, TunnelType.IPIP, 0, TUN_F_NOCSUM),
    }
    assert dests(text)[rs_key(11)].tunnel_label == "gue:6080 remcsum"
    assert dests(text)[rs_key(15)].tunnel_label == ""


def test_sorry_server_gets_its_tunnel() -> None:
    text = service(
        'forwarding = "tun"',
        'tunnel_type = "gue"',
        "tunnel_port = 6080",
        'sorry_server = { address = "198.18.2.9" }',
    )
    [sorry] = dests(text).values()  # no real server: the sorry server is in
    assert (sorry.tun_type, sorry.tun_port) == (TunnelType.GUE, 6080)


# -- plan ----------------------------------------------------------------------------------------

GUE = service(
    'forwarding = "tun"', 'tunnel_type = "gue"', "tunnel_port = 6080", servers=rs(11) + rs(12)
)


@pytest.mark.parametrize(
    "changed",
    [
        GUE.replace("tunnel_port = 6080", "tunnel_port = 6081"),
        GUE.replace('tunnel_type = "gue"\ntunnel_port = 6080', 'tunnel_type = "gre"'),
        GUE.replace("tunnel_port = 6080", 'tunnel_port = 6080\ntunnel_checksum = "csum"'),
    ],
    ids=["port", "type", "checksum"],
)
def test_a_changed_tunnel_is_an_edit_of_each_destination_and_then_nothing(changed: str) -> None:
    kernel = MemoryIPVS()
    assert not kernel.execute(plan(compile_table(parse_config(GUE)), kernel.dump()))
    want = compile_table(parse_config(changed))
    ops = plan(want, kernel.dump())
    assert ops == [
        EditDest(KEY, want.dests[KEY][rs_key(11)]),
        EditDest(KEY, want.dests[KEY][rs_key(12)]),
    ]
    assert not kernel.execute(ops)
    assert plan(want, kernel.dump()) == []
    # a reload of the same file plans nothing
    assert plan(compile_table(parse_config(changed)), kernel.dump()) == []


def test_the_in_memory_kernel_refuses_gue_without_a_port_as_linux_does() -> None:
    kernel = MemoryIPVS()
    svc = compile_table(parse_config(GUE)).services[KEY]
    bad = Dest(rs_key(11), Forwarding.TUNNEL, 1, tun_type=TunnelType.GUE, tun_port=0)
    failures = kernel.execute([AddService(svc), AddDest(KEY, bad)])
    assert [(f.op, f.errno) for f in failures] == [(AddDest(KEY, bad), errno.EINVAL)]


def test_the_reference_example_is_valid_and_means_what_it_says() -> None:
    text = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    section = text[text.index("### Tunnel forwarding (IPIP, GUE, GRE)") :]
    example = section.split("```\n", 2)[1]  # untagged: the snippets tagged toml form one file
    got = {k: d.tunnel_label for k, d in dests(example).items()}
    assert got == {rs_key(11): "gue:6080 csum", rs_key(12): "gre"}


def test_the_shared_config_digest_compares_the_tunnel_in_force_not_where_it_is_written() -> None:
    from director.peer.canonical import canonical_form, digest

    def digest_of(text: str) -> str:
        return digest(canonical_form(parse_config(text), None))

    at_service = service(
        'forwarding = "tun"', 'tunnel_type = "gue"', "tunnel_port = 6080", servers=rs(11)
    )
    at_server = service(
        'forwarding = "tun"', servers=rs(11, 'tunnel_type = "gue"', "tunnel_port = 6080")
    )
    assert digest_of(at_service) == digest_of(at_server)
    assert digest_of(at_service) != digest_of(at_service.replace("6080", "6081"))
