"""Line numbers for config locations, from a scan of the TOML text."""

from __future__ import annotations

import tomllib

from director.config.lines import LineMap

TEXT = """\
# comment = 1
[daemon]
log_level = "info"
  "state_dir" = "/x"

[kernel.sysctls]
"net.ipv4.vs.sloppy_tcp" = 1

[[virtual_server]]
name = "a"
description = '''
port = 99
'''
scheduler_flags = [
  "sh-port",
]
sorry_server = { address = "198.18.2.9" }
  [[virtual_server.real_server]]
  address = "198.18.1.1"
  [[ virtual_server . 'real_server' ]]  # spaced header
  address = "198.18.1.2"

[[virtual_server]]
port = 80
  [[virtual_server.real_server]]
  weight = 3
[virtual_server.sorry_server]
address = "198.18.2.9"
kernel.ip_forward = true
"""


def test_text_is_valid_toml() -> None:
    doc = tomllib.loads(TEXT)
    assert len(doc["virtual_server"][0]["real_server"]) == 2


def test_tables_and_keys_get_their_lines() -> None:
    lines = LineMap(TEXT)
    assert lines.line_for(("daemon",)) == 2
    assert lines.line_for(("daemon", "log_level")) == 3
    assert lines.line_for(("daemon", "state_dir")) == 4
    assert lines.line_for(("kernel", "sysctls", "net.ipv4.vs.sloppy_tcp")) == 7
    assert lines.line_for(("virtual_server", 0)) == 9
    assert lines.line_for(("virtual_server", 0, "name")) == 10
    assert lines.line_for(("virtual_server", 0, "real_server", 0, "address")) == 19
    assert lines.line_for(("virtual_server", 0, "real_server", 1)) == 20
    assert lines.line_for(("virtual_server", 0, "real_server", 1, "address")) == 21
    assert lines.line_for(("virtual_server", 1, "port")) == 24
    assert lines.line_for(("virtual_server", 1, "real_server", 0, "weight")) == 26
    assert lines.line_for(("virtual_server", 1, "sorry_server", "address")) == 28
    assert lines.line_for(("virtual_server", 1, "sorry_server", "kernel", "ip_forward")) == 29


def test_multi_line_values_are_skipped() -> None:
    lines = LineMap(TEXT)
    assert ("virtual_server", 0, "port") not in lines.lines  # inside a multi-line string
    assert lines.line_for(("virtual_server", 0, "scheduler_flags", 0)) == 14


def test_unseen_locations_fall_back_to_the_nearest_enclosing_one() -> None:
    lines = LineMap(TEXT)
    assert lines.line_for(("virtual_server", 0, "sorry_server", "address")) == 17
    assert lines.line_for(("virtual_server", 0, "real_server", 0, "port")) == 18
    assert lines.line_for(("virtual_server", 0)) == 9
    assert lines.line_for(("virtual_server", 5, "port")) == 9
    assert lines.line_for(("nowhere", "x")) is None
    assert lines.line_for(()) is None


def test_crlf_text() -> None:
    lines = LineMap("[daemon]\r\nlog_level = 1\r\n")
    assert lines.line_for(("daemon", "log_level")) == 2
