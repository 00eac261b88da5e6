"""Helpers for the importer tests: run an import, render it, validate it as a director config."""

from __future__ import annotations

from pathlib import Path

from director.config import Config, parse_config
from director.importers.emit import dumps
from director.importers.from_keepalived import import_keepalived
from director.importers.lvs_cf import Node, import_lvs_cf
from director.importers.notes import Imported

DATA = Path(__file__).parent / "data"


def keepalived(name: str) -> Imported:
    return import_keepalived(DATA / name)


def lvs_cf(name: str, node: Node = "primary") -> Imported:
    return import_lvs_cf(DATA / name, node)


def validated(imported: Imported) -> Config:
    """The imported config as the daemon would load it (raises ConfigError when invalid)."""
    return parse_config(dumps(imported.config), "<imported>")


def notes_text(imported: Imported) -> str:
    return "\n".join(str(n) for n in imported.notes.ordered())
