"""Every value is checked where it is read: one case per bug the mutation test
(``test_import_mutations.py``) found, each a traceback, a config ``directord --check-config``
refused, or a setting carried otherwise than keepalived or Piranha use it.

A value the importer cannot read is ``FILE:LINE: keyword: expected ..., found ...``; where
keepalived itself skips a setting and carries on, the import does the same and says so in a note,
so the config it writes is the one keepalived runs, and it loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from director.importers.from_keepalived import import_keepalived
from director.importers.lvs_cf import import_lvs_cf
from director.importers.notes import Imported, ImportParseError
from tests.helpers.memory import memory_cap
from tests.importers.conftest import DATA, notes_text, validated

FIELD = DATA / "field"


def vs(service: str = "", real: str = "", head: str = "198.18.0.10 80") -> str:
    """A keepalived virtual_server with one real server; the settings go in its two blocks."""
    return (
        f"virtual_server {head} {{\n  protocol TCP\n{service}\n"
        f"  real_server 198.18.1.11 80 {{\n{real}\n  }}\n}}\n"
    )


def vi(settings: str = "", name: str = "VI_1", vrid: int = 7) -> str:
    return (
        f"vrrp_instance {name} {{\n  interface eth0\n  virtual_router_id {vrid}\n{settings}\n}}\n"
    )


def lvs(virtual: str = "", server: str = "", top: str = "") -> str:
    """An lvs.cf with one virtual and one server; the settings go in the three places."""
    return (
        f"primary = 198.18.0.2\nbackup = 198.18.0.3\nheartbeat = 1\nnetwork = nat\n{top}\n"
        f"virtual web {{\n  address = 198.18.0.10 eth0:1\n  port = 80\n{virtual}\n"
        f"  server web1 {{\n    address = 198.18.1.11\n    port = 8080\n{server}\n  }}\n}}\n"
    )


URL_END = "      }\n    }"  # closes url { } and the checker
UNDEFINED = "(an undefined parameter: define it with $NAME=VALUE before its use)"
# (what was wrong before, the file, the line, the message)
KEEPALIVED_REFUSED = [
    # tracebacks: int()/float() of a word, a missing value, an inf, a unicode digit
    (
        "a word for a number (ValueError)",
        vi("  priority high"),
        4,
        'priority: expected an integer from 1 to 255, found "high"',
    ),
    (
        "a missing value (IndexError)",
        vi("  priority"),
        4,
        "priority: expected an integer from 1 to 255, found nothing",
    ),
    (
        "an undefined parameter (ValueError)",
        vi("  priority $PRIO"),
        4,
        f'priority: expected an integer from 1 to 255, found "$PRIO" {UNDEFINED}',
    ),
    (
        "inf seconds (the TOML writer raised ValueError)",
        vi("  advert_int 1e309"),
        4,
        'advert_int: expected a number of seconds greater than 0, up to 255, found "1e309"',
    ),
    (
        "nan seconds (the TOML writer raised ValueError)",
        vs(real="    TCP_CHECK {\n      delay_loop nan\n    }"),
        6,
        'delay_loop: expected a number of seconds greater than 0, up to 1000000000, found "nan"',
    ),
    (
        "an infinite retry count (OverflowError)",
        vs(
            real="    HTTP_GET {\n      nb_get_retry 1e309\n      url {\n        path /\n" + URL_END
        ),
        6,
        'nb_get_retry: expected an integer from 0 to 4294967295, found "1e309"',
    ),
    (
        "a port of unicode digits: str.isdigit() passed it, int() raised",
        vs(head="198.18.0.10 ²"),
        1,
        'virtual_server: expected a port from 0 to 65535, found "²"',
    ),
    (
        "a real server that is not an address (ValueError comparing duplicates)",
        vs().replace("real_server 198.18.1.11", "real_server web1"),
        4,
        'real_server: expected an IPv4 or IPv6 address like "198.18.0.10", found "web1"',
    ),
    (
        "lvs_sync_daemon_interface without a value (IndexError)",
        vi("  lvs_sync_daemon_interface"),
        4,
        "lvs_sync_daemon_interface: expected an interface name of 1 to 15 characters without "
        "spaces, '/' or ':', found nothing",
    ),
    (
        "a parameter that doubles on each substitution (ran out of memory)",
        "$A=${A}${A}\nglobal_defs {\n  router_id $A\n}\n",
        3,
        "parameter substitution makes the line longer than keepalived's 1024 bytes",
    ),
    (
        "a group network of 16 million addresses (expanded, one service each)",
        "virtual_server_group G {\n  198.0.0.0/8 80\n}\n",
        2,
        "virtual_server_group: expected an address, a range like 198.18.0.1-10 or a network "
        'like 198.18.0.8/29 (198.0.0.0/8 is longer than 4096 addresses), found "198.0.0.0/8"',
    ),
    # accepted, but directord --check-config refused the output
    (
        "sorry_server 0 (data/field/proxyos_fnat.conf)",
        vs("  sorry_server 0"),
        3,
        'sorry_server: expected an IPv4 or IPv6 address like "198.18.0.10", found "0"',
    ),
    (
        "a weight above IPVS's",
        vs(real="    weight 70000"),
        5,
        'weight: expected a weight from 0 to 65535, found "70000"',
    ),
    (
        "VRID 0",
        vi().replace("virtual_router_id 7", "virtual_router_id 0"),
        3,
        'virtual_router_id: expected an integer from 1 to 255, found "0"',
    ),
    (
        "lvs_timeouts tcp 0 (written as tcp_timeout = 0), a word silently skipped",
        "global_defs {\n  lvs_timeouts tcp 60 udp soon\n}\n",
        2,
        'lvs_timeouts: expected a number of seconds from 0 to 2147483, found "soon"',
    ),
    (
        "status codes that are not codes",
        vs(real="    HTTP_GET {\n      url {\n        path /\n        status_code ok\n" + URL_END),
        8,
        "status_code: expected status codes like 200 or ranges like 200-299 (100 to 599), "
        'found "ok"',
    ),
    (
        "a lower threshold above the upper one",
        vs(real="    uthreshold 10\n    lthreshold 20"),
        6,
        "lthreshold: expected at most uthreshold (10; the kernel refuses a lower threshold "
        'above the upper one), found "20"',
    ),
    (
        "a MISC_CHECK program that is not an absolute path",
        vs(real='    MISC_CHECK {\n      misc_path "check_web 198.18.1.11"\n    }'),
        6,
        "misc_path: expected a program as an absolute path (run without a shell or PATH), "
        'found "check_web"',
    ),
    (
        "a notify script that is not an absolute path",
        vi('  notify_master "notify.sh master"'),
        4,
        "notify_master: expected a program as an absolute path (run without a shell or PATH), "
        'found "notify.sh"',
    ),
    (
        "an HTTP check of a real server without a port, and no connect_port",
        vs(
            head="fwmark 5", real="    HTTP_GET {\n      url {\n        path /\n      }\n    }"
        ).replace("198.18.1.11 80", "198.18.1.11"),
        5,
        "HTTP_GET: expected connect_port N in the block: real server 198.18.1.11 has no port "
        "of its own to probe, found nothing",
    ),
    (
        "a Host header that is not printable",
        vs("  virtualhost www.exam\u202eple.com"),
        3,
        'virtualhost: expected a name of printable characters, found "www.exam\u202eple.com"',
    ),
    (
        "the same VRID twice on one interface",
        vi() + vi(name="VI_2"),
        8,
        "virtual_router_id: expected a VRID that no other IPv4 instance on eth0 uses, found "
        "7 (also VI_1, {path}:1)",
    ),
    (
        "the same service twice",
        vs() + vs(),
        8,
        "virtual_server: expected a service that no other virtual_server has, found tcp "
        "198.18.0.10 80 (also at {path}:1)",
    ),
    (
        "an instance without an interface",
        "vrrp_instance VI_1 {\n  virtual_router_id 7\n}\n",
        1,
        "vrrp_instance: expected interface NAME in the block (keepalived needs it too), "
        "found nothing",
    ),
    (
        "an instance sending from one of its virtual addresses",
        vi("  unicast_src_ip 198.18.0.10\n  virtual_ipaddress {\n    198.18.0.10/24\n  }"),
        4,
        "unicast_src_ip: expected the router's own address, not one of its virtual addresses, "
        'found "198.18.0.10"',
    ),
    (
        "an IPv6 instance sending from a global address",
        vi("  unicast_src_ip 2001:db8::2\n  virtual_ipaddress {\n    2001:db8::10/64\n  }"),
        4,
        "unicast_src_ip: expected a link-local address (fe80::/10): VRRPv3 over IPv6 sends "
        'from one, found "2001:db8::2"',
    ),
    (
        "a switch with a word (alpha maybe was read as off)",
        vs(real="    alpha maybe"),
        5,
        'alpha: expected nothing, or on or off (true/false, yes/no), found "maybe"',
    ),
    (
        "an instance whose only addresses are IPv6 peers (check-config: IPv4 peers expected)",
        vi("  unicast_peer {\n    2001:db8::3\n  }"),
        4,
        "unicast_peer: expected IPv4 peers (the instance is IPv4: give it a virtual address or "
        "unicast_src_ip of the peers' family), found 2001:db8::3",
    ),
    (
        "an IPv6 fwmark service with a dotted persistence mask (check-config: IPv4 only)",
        vs("  persistence_granularity 255.255.255.0", head="fwmark 5").replace(
            "198.18.1.11 80", "2001:db8::11 80"
        ),
        3,
        "persistence_granularity: expected a prefix length from 1 to 128 for an IPv6 service, "
        'found "255.255.255.0"',
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [case[1:] for case in KEEPALIVED_REFUSED],
    ids=[case[0] for case in KEEPALIVED_REFUSED],
)
def test_keepalived_values_refused_with_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "keepalived.conf"
    path.write_text(text)
    with memory_cap(), pytest.raises(ImportParseError) as exc:
        import_keepalived(path)
    assert str(exc.value) == f"{path}:{line}: {message.format(path=path)}"


def _vs(imported: Imported) -> dict[str, Any]:
    (service,) = imported.config["virtual_server"]
    assert isinstance(service, dict)
    return service


def _vi(imported: Imported) -> dict[str, Any]:
    instance = imported.config["vrrp_instance"][0]
    assert isinstance(instance, dict)
    return instance


# (what was wrong before, the file, what the import carries, a note it must give)
KEEPALIVED_CARRIED = [
    (
        # keepalived 2.2.7, keepalived/check/check_misc.c, misc_end_handler(): a MISC_CHECK
        # without a script path is reported ("No script path has been specified for
        # MISC_CHECKER - skipping") and dequeued (dequeue_new_checker()); the real server keeps
        # its other checkers, and with none it is never taken out. Before: KeyError 'timeout'.
        "an empty MISC_CHECK {} (KeyError)",
        vs(real="    MISC_CHECK {}"),
        lambda i: "check" not in _vs(i),
        "MISC_CHECK of real_server 198.18.1.11: no misc_path: keepalived drops the checker",
    ),
    (
        "an empty MISC_CHECK before a TCP_CHECK: the TCP_CHECK is the one keepalived keeps",
        vs(real="    MISC_CHECK {\n    }\n    TCP_CHECK {\n      connect_timeout 2\n    }"),
        lambda i: _vs(i)["check"]["type"] == "tcp",
        "no misc_path: keepalived drops the checker",
    ),
    (
        # keepalived 2.2.7, keepalived/check/check_http.c: url_check() frees a url without a
        # path ("HTTP/SSL_GET checker url has no path - ignoring") and http_get_check_end()
        # dequeues a checker left without urls ("... has no urls specified - ignoring").
        # Before: an http check of "/" that keepalived never ran.
        "an empty HTTP_GET {}",
        vs(real="    HTTP_GET {\n    }"),
        lambda i: "check" not in _vs(i),
        "HTTP_GET of real_server 198.18.1.11: no url with a path: keepalived drops the checker",
    ),
    (
        "persistence_granularity alone (check-config: persistence_netmask without persistence)",
        vs("  persistence_granularity 255.255.255.0"),
        lambda i: _vs(i)["persistence_timeout"] == 360,
        "makes the service persistent: persistence_timeout = 360, as keepalived does",
    ),
    (
        "sh-port with another scheduler (check-config: a flag of another scheduler)",
        vs("  lb_algo rr\n  sh-port"),
        lambda i: "scheduler_flags" not in _vs(i),
        "sh-port: only for the sh scheduler, set before it in the block (keepalived ignores it)",
    ),
    (
        "sh-port before lb_algo sh: keepalived reads it while the scheduler is not sh yet",
        vs("  sh-port\n  lb_algo sh"),
        lambda i: "scheduler_flags" not in _vs(i),
        "sh-port: only for the sh scheduler, set before it in the block",
    ),
    (
        "lb_kind in lower case, which keepalived ignores (carried as DR before)",
        vs("  lb_kind dr"),
        lambda i: "forwarding" not in _vs(i),
        "lb_kind dr: expected NAT, DR or TUN; ignored, as keepalived",
    ),
    (
        "an unknown lb_kind on a real server: keepalived keeps the service's (was nat)",
        vs("  lb_kind DR", "    lb_kind FNAT"),
        lambda i: "forwarding" not in _vs(i)["real_server"][0],
        "lb_kind FNAT: expected NAT, DR or TUN; ignored, as keepalived",
    ),
    (
        "an IPv6 real server in an IPv4 service (check-config: a family the service has not)",
        vs().replace("}\n}\n", "}\n  real_server 2001:db8::11 80 {\n  }\n}\n"),
        lambda i: len(_vs(i)["real_server"]) == 1,
        "not an IPv4 address like the service's (keepalived skips it)",
    ),
    (
        "a sorry server that is one of the real servers (check-config: the same server twice)",
        vs("  sorry_server 198.18.1.11 80"),
        lambda i: "sorry_server" not in _vs(i),
        "the sorry server is one of the real servers",
    ),
    (
        "the same member twice in a virtual_server_group (check-config: a service twice)",
        "virtual_server_group G {\n  198.18.0.50 80\n  198.18.0.50 80\n}\n" + vs(head="group G"),
        lambda i: _vs(i)["address"] == "198.18.0.50",
        "198.18.0.50 80: in the group already",
    ),
    (
        "a second instance of the same name (check-config: a name twice)",
        vi() + vi(vrid=8),
        lambda i: [v["vrid"] for v in i.config["vrrp_instance"]] == [7],
        "an instance of this name exists already (keepalived skips the block)",
    ),
    (
        "a sync group naming an instance that does not exist (check-config: unknown name)",
        vi() + "vrrp_sync_group G {\n  group {\n    VI_1\n    VI_9\n  }\n}\n",
        lambda i: i.config["vrrp_sync_group"][0]["instances"] == ["VI_1"],
        "vrrp_sync_group G > VI_9: no vrrp_instance has this name (keepalived ignores it)",
    ),
    (
        "a sync group left without members (check-config: at least one instance)",
        "vrrp_sync_group G {\n  group {\n    VI_9\n  }\n}\n" + vi(),
        lambda i: "vrrp_sync_group" not in i.config,
        "no instance left in it: keepalived removes it",
    ),
    (
        "authentication on a VRRPv3 instance (check-config: password needs version 2)",
        vi(
            "  version 3\n  virtual_ipaddress {\n    198.18.0.10/24\n  }\n"
            "  authentication {\n    auth_type PASS\n    auth_pass secret\n  }"
        ),
        lambda i: "password" not in _vi(i),
        "VRRPv3 has no authentication and keepalived ignores it",
    ),
    (
        "advert_int 1.5 on VRRPv2 (check-config: whole seconds)",
        vi("  advert_int 1.5"),
        lambda i: _vi(i)["advert_interval"] == 2.0,
        "VRRPv2 advertises whole seconds: 2, as keepalived rounds it",
    ),
    (
        "an IPv6 address in an IPv4 instance (check-config: one family)",
        vi("  virtual_ipaddress {\n    198.18.0.10/24\n    2001:db8::10/64\n  }"),
        lambda i: _vi(i)["virtual_addresses"] == ["198.18.0.10/24"],
        "an IPv6 address in an IPv4 instance (keepalived ignores it)",
    ),
    (
        "a label that does not start with the device (check-config: label)",
        vi("  virtual_ipaddress {\n    198.18.0.10/24 dev eth1 label eth0:1\n  }"),
        lambda i: _vi(i)["virtual_addresses"] == [{"address": "198.18.0.10/24", "device": "eth1"}],
        "a label is for an IPv4 address and starts with its device's name",
    ),
    (
        "an address owner tracking a weighted interface (check-config: weight must be 0)",
        vi("  priority 255\n  track_interface {\n    eth1 weight -20\n    eth2\n  }"),
        lambda i: _vi(i)["track_interfaces"] == [{"interface": "eth2", "weight": 0}],
        "an address owner (priority 255) ignores weighted interfaces, as keepalived",
    ),
    (
        "the same interface tracked twice (check-config: each interface once)",
        vi("  track_interface {\n    eth1\n    eth1 weight -5\n  }"),
        lambda i: _vi(i)["track_interfaces"] == [{"interface": "eth1", "weight": 0}],
        "a duplicate (keepalived ignores it)",
    ),
    (
        "an IPv6 unicast peer of an IPv4 instance (check-config: one family)",
        vi("  unicast_peer {\n    198.18.0.3\n    2001:db8::3\n  }"),
        lambda i: _vi(i)["unicast_peers"] == ["198.18.0.3"],
        "peers of another family than the instance's (IPv4): 2001:db8::3",
    ),
    (
        "an IPv6 link-local unicast_src_ip in a VRRPv2 instance (check-config: IPv4 only)",
        vi(
            "  unicast_src_ip fe80::2\n  unicast_peer {\n    fe80::3\n  }\n"
            "  virtual_ipaddress {\n    2001:db8::10/64\n  }"
        ),
        lambda i: _vi(i)["version"] == 3,
        "IPv6: version = 3, as keepalived sets it",
    ),
    (
        "a NAT real server without a port and one with the service's (check-config: twice)",
        vs().replace("}\n}\n", "}\n  real_server 198.18.1.11 {\n  }\n}\n"),
        lambda i: len(_vs(i)["real_server"]) == 1,
        "real_server 198.18.1.11: the same server again (keepalived drops it)",
    ),
    (
        "a service whose real servers keepalived all skips (check-config: a service of none)",
        vs().replace("real_server 198.18.1.11", "real_server 2001:db8::11")
        + vs(head="198.18.0.11 80"),
        lambda i: _vs(i)["address"] == "198.18.0.11",
        "virtual_server 198.18.0.10 80: no real servers left: keepalived ignores it",
    ),
    (
        "enable_sni off (was read as on)",
        vs(
            "  virtualhost www.example.com",
            "    SSL_GET {\n      enable_sni off\n      url {\n        path /\n" + URL_END,
        ),
        lambda i: "sni" not in _vs(i)["check"],
        "keepalived does not verify the server's certificate",
    ),
    (
        "lvs_timeouts tcp 0: keepalived leaves the kernel's (check-config: 1 or more)",
        "global_defs {\n  lvs_timeouts tcp 0 udp 30\n}\n" + vs(),
        lambda i: i.config["kernel"] == {"udp_timeout": 30},
        "lvs_timeouts tcp 0: the kernel's timeout is kept",
    ),
]


@pytest.mark.parametrize(
    ("text", "carried", "note"),
    [case[1:] for case in KEEPALIVED_CARRIED],
    ids=[case[0] for case in KEEPALIVED_CARRIED],
)
def test_keepalived_settings_keepalived_skips_are_skipped_and_noted(
    tmp_path: Path, text: str, carried: Any, note: str
) -> None:
    path = tmp_path / "keepalived.conf"
    path.write_text(text)
    imported = import_keepalived(path)
    validated(imported)
    assert carried(imported), imported.config
    assert note in notes_text(imported)


LVS_REFUSED = [
    (
        "a server without an address value (IndexError)",
        lvs(server="    address ="),
        13,
        'address: expected an IPv4 or IPv6 address like "198.18.0.10", found nothing',
    ),
    (
        "an empty sorry_server (IndexError)",
        lvs("  sorry_server ="),
        9,
        'sorry_server: expected an IPv4 or IPv6 address like "198.18.0.10", found nothing',
    ),
    (
        "a word for a number (noted, and the default used silently for 0 or less)",
        lvs(top="keepalive = 0"),
        5,
        'keepalive: expected a number of seconds from 1 to 255, found "0"',
    ),
    (
        "an unknown scheduler (check-config refused it)",
        lvs("  scheduler = fastest"),
        9,
        "scheduler: expected an IPVS scheduler (dh, fo, lblc, lblcr, lc, mh, nq, ovf, rr, sed, "
        'sh, wlc, wrr), found "fastest"',
    ),
    (
        "an unknown protocol (check-config refused it)",
        lvs("  protocol = icmp"),
        9,
        'protocol: expected tcp or udp, found "icmp"',
    ),
    (
        "a weight above IPVS's (check-config refused it)",
        lvs(server="    weight = 70000"),
        13,
        'weight: expected a weight from 0 to 65535, found "70000"',
    ),
    (
        "a port of unicode digits (int() took them)",
        lvs(server="").replace("port = 8080", "port = ٨٠"),
        12,
        'port: expected a port from 0 to 65535, found "٨٠"',
    ),
    (
        "a regex expect RE2 cannot run (check-config refused it)",
        lvs('  expect = "(?=OK)"\n  use_regex = 1'),
        9,
        "expect: expected a valid regular expression that RE2 can run (linear time), found "
        '"(?=OK)": ',
    ),
    (
        "an IPv6 server in an IPv4 virtual (check-config refused it)",
        lvs(server="").replace("address = 198.18.1.11", "address = 2001:db8::11"),
        11,
        'address: expected an IPv4 address like the virtual\'s, found "2001:db8::11"',
    ),
    (
        "the director's own address as a virtual address (check-config refused it)",
        lvs().replace("primary = 198.18.0.2", "primary = 198.18.0.10"),
        1,
        'primary: expected the director\'s own address, not a virtual one, found "198.18.0.10"',
    ),
    (
        "two virtuals for one service (check-config refused it)",
        lvs() + lvs().split("\n", 5)[5].replace("web1", "web2"),
        16,
        "virtual: expected a service that no other virtual has, found tcp 198.18.0.10 80 "
        "(also virtual web)",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [case[1:] for case in LVS_REFUSED],
    ids=[case[0] for case in LVS_REFUSED],
)
def test_lvs_cf_values_refused_with_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "lvs.cf"
    path.write_text(text)
    with pytest.raises(ImportParseError) as exc:
        import_lvs_cf(path)
    assert str(exc.value).startswith(f"{path}:{line}: {message}")


def test_lvs_cf_without_heartbeat_syncs_as_the_only_director(tmp_path: Path) -> None:
    """heartbeat = 0 gives no VRRP instance; the sync daemon then named instance "lvs", which
    check-config refused. Without an instance it runs as master, as the lone director."""
    path = tmp_path / "lvs.cf"
    path.write_text(lvs(top="heartbeat = 0\nsyncdaemon = 1\nsyncd_iface = eth1"))
    imported = import_lvs_cf(path)
    validated(imported)
    assert imported.config["sync_daemon"] == {"interface": "eth1"}


@pytest.mark.parametrize(
    ("text", "note"),
    [
        (  # check-config: a sorry server that is a real server
            lvs("  sorry_server = 198.18.1.11").replace("network = nat", "network = direct"),
            "sorry_server = 198.18.1.11: the sorry server is one of the servers",
        ),
        (  # check-config: one server twice (no port is the virtual's, as port = 80)
            lvs(server="  }\n  server web2 {\n    address = 198.18.1.11\n    port = 8080"),
            "server web2: the same address and port again",
        ),
    ],
)
def test_lvs_cf_servers_in_the_table_once(tmp_path: Path, text: str, note: str) -> None:
    path = tmp_path / "lvs.cf"
    path.write_text(text)
    imported = import_lvs_cf(path)
    validated(imported)
    assert note in notes_text(imported)


def test_lvs_cf_virtuals_of_one_name_are_told_apart(tmp_path: Path) -> None:
    path = tmp_path / "lvs.cf"
    path.write_text(lvs() + lvs().split("\n", 5)[5].replace("port = 80", "port = 81"))
    names = [v.name for v in validated(import_lvs_cf(path)).virtual_servers]
    assert names == ["web", "web#2"]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("keepalived.conf", "global_defs {\n  router_id a\x0cb\x85c\u2028d\n}\n}\n"),
        ("lvs.cf", "serial_no = 1\x0c2\x85\u2028\n}\n"),
    ],
)
def test_line_numbers_count_newlines_only(tmp_path: Path, name: str, text: str) -> None:
    """A form feed, NEL or U+2028 inside a line is no line break for keepalived or Piranha
    (str.splitlines() counted them, so every later line number was off)."""
    path = tmp_path / name
    path.write_text(text)
    read = import_keepalived if name == "keepalived.conf" else import_lvs_cf
    with pytest.raises(ImportParseError) as exc:
        read(path)
    assert str(exc.value) == f"{path}:{text.count(chr(10))}: '}}' closes no block"


def test_the_field_file_with_sorry_server_0_is_refused_at_its_line() -> None:
    """data/field/proxyos_fnat.conf (an FNAT fork's keepalived.conf from a public repository)
    carried ``sorry_server 0`` into a config check-config refused."""
    path = FIELD / "proxyos_fnat.conf"
    with pytest.raises(ImportParseError) as exc:
        import_keepalived(path)
    assert str(exc.value) == (
        f'{path}:26: sorry_server: expected an IPv4 or IPv6 address like "198.18.0.10", found "0"'
    )


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in FIELD.glob("*.c*f") if p.name != "proxyos_fnat.conf"),
)
def test_the_field_files_import_and_load(name: str) -> None:
    path = FIELD / name
    for node in ("primary", "backup") if name.endswith(".cf") else ("primary",):
        imported = import_lvs_cf(path, node) if name.endswith(".cf") else import_keepalived(path)
        validated(imported)
