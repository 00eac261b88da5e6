"""keepalived's own adjustments to what it reads, reproduced by the importer.

Each test states what keepalived 2.2.7 does (the source file:function:line it comes from, read
from acassen/keepalived at tag v2.2.7) and asserts the import's matching output and note. The
list of every adjustment and what the importer does with it is in docs/migration.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from director.importers.from_keepalived import import_keepalived
from director.importers.notes import Imported, ImportParseError
from tests.importers.conftest import notes_text, validated

VIPS = "  virtual_ipaddress {\n    198.18.0.10/24\n  }\n"
PASS = "  authentication {\n    auth_type PASS\n    auth_pass 1111\n  }\n"


def imported(tmp_path: Path, text: str) -> Imported:
    path = tmp_path / "keepalived.conf"
    path.write_text(text)
    result = import_keepalived(path)
    validated(result)
    return result


def refused(tmp_path: Path, text: str) -> str:
    path = tmp_path / "keepalived.conf"
    path.write_text(text)
    with pytest.raises(ImportParseError) as info:
        import_keepalived(path)
    return str(info.value)


def instance(settings: str, top: str = "") -> str:
    return f"{top}vrrp_instance VI_1 {{\n  interface eth0\n  virtual_router_id 51\n{settings}}}\n"


def vi(result: Imported) -> dict[str, Any]:
    first: dict[str, Any] = result.config["vrrp_instance"][0]
    return first


# --- authentication ---------------------------------------------------------------------------


def test_strict_mode_ignores_authentication(tmp_path: Path) -> None:
    # vrrp.c:vrrp_complete_instance:2923 "Strict mode does not support authentication.
    # Ignoring." -> auth_type = VRRP_AUTH_NONE (global vrrp_strict; strict_mode on per instance)
    for top, inside in (("global_defs {\n  vrrp_strict\n}\n", ""), ("", "  strict_mode on\n")):
        result = imported(tmp_path, instance(inside + "  priority 100\n" + VIPS + PASS, top))
        assert "password" not in vi(result)
        text = notes_text(result)
        assert "vrrp_strict: keepalived ignores authentication in strict mode" in text
        assert "the adverts carry no password" in text  # the consequence on the wire


def test_strict_mode_off_keeps_the_global(tmp_path: Path) -> None:
    # vrrp.c:2860 strict_mode == PARAMETER_UNSET takes global vrrp_strict; "strict_mode off"
    # (vrrp_parser.c:vrrp_strict_mode_handler:1061) overrides it
    top = "global_defs {\n  vrrp_strict\n}\n"
    result = imported(tmp_path, instance("  strict_mode off\n" + VIPS + PASS, top))
    assert vi(result)["password"] == "1111"


@pytest.mark.parametrize(
    ("top", "inside"),
    [
        ("", "  version 3\n" + VIPS),
        ("global_defs {\n  vrrp_version 3\n}\n", VIPS),
        ("", "  virtual_ipaddress {\n    2001:db8::10/64\n  }\n"),
    ],
    ids=["instance version 3", "global vrrp_version 3", "forced by an IPv6 address"],
)
def test_vrrpv3_ignores_authentication(tmp_path: Path, top: str, inside: str) -> None:
    # vrrp.c:vrrp_complete_instance:2929 "VRRP version 3 does not support authentication.
    # Ignoring."; the version comes from the instance, else IPv6 (2862-2871, 2883-2885), else
    # global vrrp_version (2887)
    result = imported(tmp_path, instance(inside + PASS, top))
    assert vi(result)["version"] == 3
    assert "password" not in vi(result)
    assert "VRRPv3 has no authentication and keepalived ignores it" in notes_text(result)


@pytest.mark.parametrize("word", ["pass", "Pass", "MD5"])
def test_auth_type_other_than_pass_or_ah_means_none(tmp_path: Path, word: str) -> None:
    # vrrp_parser.c:vrrp_auth_type_handler:1426: strcmp "AH" / "PASS", else "unknown
    # authentication type" and auth_type stays VRRP_AUTH_NONE
    auth = f"  authentication {{\n    auth_type {word}\n    auth_pass 1111\n  }}\n"
    result = imported(tmp_path, instance(VIPS + auth))
    assert "password" not in vi(result)
    assert "not PASS or AH (keepalived reads them case-sensitively)" in notes_text(result)


def test_auth_type_without_password_is_ignored(tmp_path: Path) -> None:
    # vrrp.c:2935 "Authentication specified but no password given. Ignoring"
    result = imported(tmp_path, instance(VIPS + "  authentication {\n    auth_type PASS\n  }\n"))
    assert "password" not in vi(result)
    assert "no auth_pass: keepalived ignores the authentication" in notes_text(result)


def test_auth_pass_cut_to_eight_bytes(tmp_path: Path) -> None:
    # vrrp_parser.c:vrrp_auth_pass_handler:1439 "Truncating auth_pass to 8 characters"
    auth = "  authentication {\n    auth_type PASS\n    auth_pass longsecret123\n  }\n"
    result = imported(tmp_path, instance(VIPS + auth))
    assert vi(result)["password"] == "longsecr"
    assert "cut to 8, as keepalived does" in notes_text(result)


# --- state, priority, preemption --------------------------------------------------------------


def test_state_master_without_priority_is_the_address_owner(tmp_path: Path) -> None:
    # vrrp.c:vrrp_complete_instance:2904-2910: base_priority unset and wantstate MASTER ->
    # VRRP_PRIO_OWNER (255); unset and BACKUP -> VRRP_PRIO_DFL (100)
    result = imported(tmp_path, instance("  state MASTER\n" + VIPS))
    assert vi(result)["priority"] == 255
    assert "keepalived makes the instance the address owner (priority 255)" in notes_text(result)
    backup = imported(tmp_path, instance("  state BACKUP\n" + VIPS))
    assert "priority" not in vi(backup)  # 100, the default of both


def test_state_master_clears_nopreempt_and_preempt_delay(tmp_path: Path) -> None:
    # vrrp.c:vrrp_complete_instance:3110-3122: wantstate MASTER clears NOPREEMPT ("nopreempt
    # will not work with initial state MASTER - clearing") and preempt_delay
    result = imported(
        tmp_path,
        instance("  state MASTER\n  priority 150\n  nopreempt\n  preempt_delay 30\n" + VIPS),
    )
    assert "preempt" not in vi(result)  # preempts, the default
    assert "preempt_delay" not in vi(result)
    text = notes_text(result)
    assert "keepalived clears nopreempt under state MASTER, so the import preempts" in text
    assert "keepalived clears preempt_delay under state MASTER" in text


def test_backup_keeps_nopreempt(tmp_path: Path) -> None:
    result = imported(tmp_path, instance("  state BACKUP\n  priority 150\n  nopreempt\n" + VIPS))
    assert vi(result)["preempt"] is False


def test_the_last_of_preempt_and_nopreempt_wins(tmp_path: Path) -> None:
    # vrrp_parser.c:1078 nopreempt sets the flag, 1084 preempt clears it: the last line wins
    result = imported(tmp_path, instance("  nopreempt\n  preempt\n" + VIPS))
    assert "preempt" not in vi(result)
    result = imported(tmp_path, instance("  preempt\n  nopreempt\n" + VIPS))
    assert vi(result)["preempt"] is False


def test_address_owner_clears_nopreempt(tmp_path: Path) -> None:
    # vrrp.c:3100 "nopreempt is incompatible with priority 255. resetting nopreempt"
    result = imported(tmp_path, instance("  state BACKUP\n  priority 255\n  nopreempt\n" + VIPS))
    assert "preempt" not in vi(result)
    assert "an address owner (priority 255) always preempts" in notes_text(result)


def test_strict_state_master_must_be_the_owner(tmp_path: Path) -> None:
    # vrrp.c:2914-2919 under strict mode "State MASTER must match being address owner": a
    # priority-100 MASTER starts as BACKUP, so its nopreempt is NOT cleared (3110 tests
    # wantstate); preempt_delay is reset in strict mode (3124)
    top = "global_defs {\n  vrrp_strict\n}\n"
    result = imported(
        tmp_path,
        instance("  state MASTER\n  priority 100\n  nopreempt\n  preempt_delay 5\n" + VIPS, top),
    )
    assert vi(result)["preempt"] is False
    assert "preempt_delay" not in vi(result)
    text = notes_text(result)
    assert "state MASTER needs priority 255 (it has 100)" in text
    assert "keepalived resets preempt_delay in strict mode" in text


def test_preempt_delay_with_nopreempt_is_reset(tmp_path: Path) -> None:
    # vrrp.c:3130 "preempt_delay is incompatible with nopreempt mode - resetting"
    result = imported(tmp_path, instance("  nopreempt\n  preempt_delay 10\n" + VIPS))
    assert "preempt_delay" not in vi(result)
    assert "keepalived resets preempt_delay with nopreempt" in notes_text(result)


@pytest.mark.parametrize("word", ["master", "Master", "PRIMARY"])
def test_state_other_than_master_or_backup_is_backup(tmp_path: Path, word: str) -> None:
    # vrrp_parser.c:vrrp_state_handler:786-803: strcmp "MASTER" / "BACKUP"; anything else
    # "unknown state, defaulting to BACKUP": no owner priority, nopreempt kept
    result = imported(tmp_path, instance(f"  state {word}\n  nopreempt\n" + VIPS))
    assert "priority" not in vi(result)
    assert vi(result)["preempt"] is False
    assert "keepalived defaults to BACKUP" in notes_text(result)


def test_backup_after_master_is_ignored(tmp_path: Path) -> None:
    # vrrp_parser.c:795 "state previously set as MASTER - ignoring BACKUP"
    result = imported(tmp_path, instance("  state MASTER\n  state BACKUP\n" + VIPS))
    assert vi(result)["priority"] == 255
    assert "after state MASTER: keepalived ignores it" in notes_text(result)


# --- refused: keepalived does not start the instance ------------------------------------------


def test_strict_mode_refuses_unicast_peers(tmp_path: Path) -> None:
    # vrrp.c:2961 "Unicast peers are not supported in strict mode" -> return false
    top = "global_defs {\n  vrrp_strict\n}\n"
    text = instance(VIPS + "  unicast_peer {\n    198.18.0.3\n  }\n", top)
    message = refused(tmp_path, text)
    assert "keepalived refuses unicast peers under vrrp_strict" in message
    assert "keepalived.conf:" in message


@pytest.mark.parametrize(
    "text",
    [instance("  version 3\n"), instance("", "global_defs {\n  vrrp_strict\n}\n")],
    ids=["VRRPv3", "strict"],
)
def test_no_virtual_address_refused_where_keepalived_refuses(tmp_path: Path, text: str) -> None:
    # vrrp.c:2895-2899 "No VIP specified; at least one is required" (VRRPv3 or strict)
    assert "keepalived refuses a VRRPv3 or strict-mode instance" in refused(tmp_path, text)


# --- addresses and intervals ------------------------------------------------------------------


def test_addresses_past_the_255th_become_excluded(tmp_path: Path) -> None:
    # vrrp.c:3083-3096 "Number of VIPs exceeds maximum/space available in packet - excess
    # moved to eVIPs": held by the master, not advertised
    addresses = "".join(f"    198.18.{n // 250}.{n % 250 + 1}/32\n" for n in range(260))
    result = imported(tmp_path, instance("  virtual_ipaddress {\n" + addresses + "  }\n"))
    assert len(vi(result)["virtual_addresses"]) == 255
    assert len(vi(result)["excluded_addresses"]) == 5
    assert "moved to excluded_addresses" in notes_text(result)


@pytest.mark.parametrize(
    ("version", "given", "carried"),
    [(2, "0.4", 1.0), (2, "2.5", 3.0), (3, "0.123", 0.12), (3, "50", 40.95)],
)
def test_advert_int_rounded_as_keepalived(
    tmp_path: Path, version: int, given: str, carried: float
) -> None:
    # vrrp.c:vrrp_complete_instance:3262-3300: VRRPv2 rounds to whole seconds (at least 1),
    # VRRPv3 to centiseconds and caps at 40.95 s
    result = imported(tmp_path, instance(f"  version {version}\n  advert_int {given}\n" + VIPS))
    assert vi(result)["advert_interval"] == carried


# --- the parser (lib/parser.c) ----------------------------------------------------------------


def test_escaped_comment_characters_are_characters(tmp_path: Path) -> None:
    # lib/parser.c:decomment:2169-2222: outside double quotes "\!" and "\#" lose the backslash
    # and start no comment; an unescaped ! or # does
    auth = "  authentication {\n    auth_type PASS\n    auth_pass a\\!b\\#c ! a comment\n  }\n"
    result = imported(tmp_path, instance(VIPS + auth))
    assert vi(result)["password"] == "a!b#c"


def test_multi_line_definition_continued_with_backslash(tmp_path: Path) -> None:
    # lib/parser.c:2711-2740 "Handle multi-line definitions": a $NAME= value ending in "\"
    # goes on over the next lines; using $NAME puts those lines in its place
    text = (
        "$VIPS=virtual_ipaddress { \\\n"
        "    198.18.0.10/24 \\\n"
        "    198.18.0.11/24 \\\n"
        "}\n" + instance("  $VIPS\n")
    )
    result = imported(tmp_path, text)
    assert vi(result)["virtual_addresses"] == ["198.18.0.10/24", "198.18.0.11/24"]


def test_trailing_backslash_on_a_statement_is_refused(tmp_path: Path) -> None:
    # lib/parser.c: only a definition is continued; on any other line keepalived keeps the "\"
    # as a word (alloc_strvec_r) and reads the next line as a statement of its own
    text = instance("  virtual_ipaddress {\n    198.18.0.10/24 \\\n  dev eth0\n  }\n")
    message = refused(tmp_path, text)
    assert "a trailing \\ does not continue a line in keepalived" in message
    assert "keepalived.conf:5:" in message


def test_a_slash_zero_virtual_address_is_refused(tmp_path: Path) -> None:
    # keepalived would add the address with a /0 (every address on-link); directord's
    # check-config refuses a /0 virtual address, so the import refuses it where it reads it
    text = instance("  virtual_ipaddress {\n    198.18.0.10/0\n  }\n")
    assert "a prefix length from 1 to 32" in refused(tmp_path, text)


def test_garp_master_repeat_zero_is_one(tmp_path: Path) -> None:
    # vrrp_parser.c:vrrp_garp_rep_handler:1273 and global_parser.c:863 "garp_master_repeat
    # must be greater than 0, setting to 1"
    result = imported(tmp_path, instance("  garp_master_repeat 0\n" + VIPS))
    assert vi(result)["garp_count"] == 1
    top = "global_defs {\n  vrrp_garp_master_repeat 0\n}\n"
    assert vi(imported(tmp_path, instance(VIPS, top)))["garp_count"] == 1
    assert "keepalived sends at least one round of gratuitous ARPs" in notes_text(result)
