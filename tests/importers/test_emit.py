"""The TOML writer: what it writes reads back as the same data."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from director.importers.emit import dumps, value

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
keys = st.text(min_size=1, max_size=12)
tables = st.recursive(
    st.dictionaries(keys, st.one_of(scalars, st.lists(scalars, max_size=4)), max_size=5),
    lambda inner: st.dictionaries(keys, st.one_of(inner, st.lists(inner, max_size=3)), max_size=4),
    max_leaves=20,
)


@given(tables)
def test_round_trip(data: dict[str, Any]) -> None:
    assert tomllib.loads(dumps(data)) == data


def test_layout_follows_the_reference() -> None:
    text = dumps(
        {
            "sync_daemon": {"interface": "eth1"},
            "virtual_server": [
                {
                    "name": "web",
                    "sorry_server": {"address": "198.18.2.9"},
                    "check": {"type": "tcp"},
                    "real_server": [{"address": "198.18.1.1", "check": {"port": 81}}],
                }
            ],
        },
        ["made by a test"],
    )
    assert text == (
        "# made by a test\n"
        "\n"
        "[sync_daemon]\n"
        'interface = "eth1"\n'
        "\n"
        "[[virtual_server]]\n"
        'name = "web"\n'
        'sorry_server = { address = "198.18.2.9" }\n'
        "\n"
        "[virtual_server.check]\n"
        'type = "tcp"\n'
        "\n"
        "  [[virtual_server.real_server]]\n"
        '  address = "198.18.1.1"\n'
        "\n"
        "  [virtual_server.real_server.check]\n"
        "  port = 81\n"
    )


def test_values() -> None:
    assert value('a"b\\c\n\x01') == '"a\\"b\\\\c\\n\\u0001"'
    assert value(2.0) == "2.0"
    assert value(0.1) == "0.1"
    assert value([1, "x", {"a": True}]) == '[1, "x", { a = true }]'
    with pytest.raises(TypeError):
        value(object())
    with pytest.raises(ValueError, match="cannot write"):
        value(float("nan"))
