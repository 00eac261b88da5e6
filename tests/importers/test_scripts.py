"""Command lines split like keepalived/nanny, and well-known check programs made native."""

from __future__ import annotations

from pathlib import Path

from director.importers.scripts import command_argv, recognise


def test_command_lines() -> None:
    assert command_argv("/usr/bin/check 'a b' c") == (["/usr/bin/check", "a b", "c"], False)
    assert command_argv("/usr/bin/check x | grep -q OK") == (
        ["/bin/sh", "-c", "/usr/bin/check x | grep -q OK"],
        True,
    )
    assert command_argv("/usr/bin/check 'x | y'")[1] is False
    assert command_argv("/usr/bin/check 'unbalanced")[1] is True


def test_check_x224() -> None:
    found = recognise(["/usr/lib/nagios/plugins/check_x224", "-H", "{address}", "-p", "3390"])
    assert found is not None
    assert found.check == {"type": "rdp", "port": 3390}
    found = recognise(["/usr/local/bin/check_x224", "-H", "{address}"])
    assert found is not None
    assert found.check == {"type": "rdp", "port": 3389}


def test_exchange_loop_in_a_script_file(tmp_path: Path) -> None:
    script = tmp_path / "check_exchange.sh"
    script.write_text(
        "#!/bin/sh\nfor vdir in owa ews rpc; do\n"
        '  printf "GET /${vdir}/healthcheck.htm HTTP/1.1\\r\\nHost: $1\\r\\n\\r\\n" |\n'
        "    openssl s_client -quiet -connect $1:4443 | grep -q '200 OK' || exit 1\ndone\n"
    )
    found = recognise([str(script), "{address}"])
    assert found is not None
    assert found.check == {
        "type": "exchange",
        "verify": False,
        "vdirs": ["owa", "ews", "rpc"],
        "port": 4443,
    }


def test_literal_vdirs_and_url_checks() -> None:
    found = recognise(
        ["/bin/sh", "-c", "echo 'GET /rpc/healthcheck.htm' | openssl s_client -connect x:443"]
    )
    assert found is not None
    assert found.check["vdirs"] == ["rpc"]
    found = recognise(["/usr/bin/curl", "-fsk", "https://{address}:8443/health?x=1"])
    assert found is not None
    assert found.check == {
        "type": "https",
        "port": 8443,
        "path": "/health?x=1",
        "verify": False,
        "expect_status": ["200-399"],
    }
    found = recognise(["/usr/bin/wget", "--spider", "http://intranet.example.com/"])
    assert found is not None
    assert found.check["type"] == "http"
    assert found.check["host"] == "intranet.example.com"
    assert found.check["port"] == 80
    assert recognise(["/usr/local/bin/my_check", "{address}"]) is None
