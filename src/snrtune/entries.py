"""What the one-entry tables (snrtune.method_registry, snrtune.criteria) share. Light: no torch."""

from __future__ import annotations

import contextlib
from typing import Callable, Collection, Iterator, TypeVar

Entry = TypeVar("Entry")


def add(table: dict, entry: Entry, what: str, taken: Collection[str] = ()) -> Entry:
    """``table[entry.name] = entry``; a name already in the table (or in ``taken``) is an error."""
    if entry.name in table or entry.name in taken:
        raise ValueError(f"{what} {entry.name!r} is already registered")
    table[entry.name] = entry
    return entry


@contextlib.contextmanager
def temporarily(add: Callable[[Entry], Entry], remove: Callable[[str], None], entry: Entry) -> Iterator[Entry]:
    """``add(entry)`` for the block only (``remove(entry.name)`` after it): a table entry that exists inside a
    ``with`` block, for tests."""
    add(entry)
    try:
        yield entry
    finally:
        remove(entry.name)
