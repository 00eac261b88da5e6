"""Importers: keepalived.conf and Piranha lvs.cf -> a director config (TOML) and notes.

Each importer returns an :class:`~director.importers.notes.Imported`: the config as plain TOML
data (dicts, lists, strings, numbers) and the notes that say, for every setting of the source,
how it was carried or why it was not. :func:`director.importers.emit.dumps` writes the data as
TOML. Nothing is dropped silently: a keyword the importer does not know becomes a note too.
"""

from director.importers.notes import Imported, ImportParseError, Note, Notes

__all__ = ["ImportParseError", "Imported", "Note", "Notes"]
