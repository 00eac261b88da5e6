"""Project-wide pytest setup: the vm-guest proxying plugin and the network-namespace fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.netns import Topology

pytest_plugins = ["tests.helpers.vm.pytest_plugin"]


@pytest.fixture
def topology() -> Iterator[Topology]:
    """Network namespaces (198.18.0.0/15, 2001:db8::/32 only), all torn down after the test."""
    with Topology() as topo:
        yield topo
