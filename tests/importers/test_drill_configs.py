"""The guest drills' configs (tests/importers/data/drill): keepalived's shipped default file,
moved into the test ranges and nothing else, and what its import carries."""

from __future__ import annotations

from director.importers.from_keepalived import import_keepalived
from tests.importers.conftest import DATA, notes_text, validated

DRILL = DATA / "drill"
# The only substitutions (README.md): network safety, 198.18.0.0/15.
MOVES = (
    ("192.168.200.", "198.18.200."),
    ("192.168.201.", "198.18.201."),
    ("10.10.10.", "198.19.10."),
)


def test_the_drill_sample_is_the_shipped_file_with_addresses_moved() -> None:
    original = (DRILL / "keepalived-2.2.7.conf.orig").read_text()
    moved = original
    for old, new in MOVES:
        moved = moved.replace(old, new)
    assert moved != original
    assert (DRILL / "sample.conf").read_text() == moved
    for shipped in ("vrrp_strict", "auth_type PASS", "auth_pass 1111", "virtual_router_id 51"):
        assert shipped in moved


def test_the_sample_imports_as_keepalived_runs_it() -> None:
    # vrrp_strict: no authentication on the wire (vrrp.c:2923), state MASTER at priority 100
    # is BACKUP (vrrp.c:2914), VRRPv2 (the global default), 1 s adverts
    imported = import_keepalived(DRILL / "sample.conf")
    validated(imported)
    (vi,) = imported.config["vrrp_instance"]
    assert vi["vrid"] == 51
    assert "password" not in vi
    assert "priority" not in vi and "version" not in vi
    assert vi["advert_interval"] == 1.0
    assert vi["virtual_addresses"] == ["198.18.200.16/32", "198.18.200.17/32", "198.18.200.18/32"]
    assert len(imported.config["virtual_server"]) == 3
    text = notes_text(imported)
    assert "vrrp_strict: keepalived ignores authentication in strict mode" in text
    assert "state MASTER needs priority 255 (it has 100)" in text


def test_the_excluded_pair_imports() -> None:
    imported = import_keepalived(DRILL / "excluded_backup.conf")
    validated(imported)
    (vi,) = imported.config["vrrp_instance"]
    assert vi["password"] == "drill2"
    assert [a["address"] for a in vi["excluded_addresses"]] == [
        "198.18.0.111/32",
        "2001:db8::111/128",
    ]
    master = import_keepalived(DRILL / "excluded_master.conf")
    assert master.config["vrrp_instance"][0]["priority"] == 150
