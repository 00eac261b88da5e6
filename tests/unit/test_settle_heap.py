"""director.app.settle_heap at start and after each reload: what lives on leaves the cyclic
collector's view, and the previous config's garbage (reference cycles included) is still freed:
a reload loop does not grow the heap."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from director.app import settle_heap


class Model:
    """A config model in a reference cycle with its parts (as pydantic models and their
    validators' closures can be)."""

    def __init__(self, size: int) -> None:
        self.parts = [{"owner": self, "n": n} for n in range(size)]


@pytest.fixture
def collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        gc.collect()


def test_a_reload_loop_frees_each_previous_config(collector: None) -> None:
    alive: list[weakref.ref[Model]] = []
    running = Model(1000)
    settle_heap()
    assert gc.get_freeze_count() > 0  # what lives on is out of the collector's view
    for _ in range(30):
        running = Model(1000)  # a reload: the previous model is cyclic garbage, frozen
        alive.append(weakref.ref(running))
        settle_heap()
    assert sum(ref() is not None for ref in alive) == 1  # the running one only
    assert running is alive[-1]()
