"""How a source is named to the people who read an answer: its path inside the knowledge base.

The store keys documents by their absolute path on the server (incremental ingest and pruning need
it), which says nothing to a reader and tells an outsider how the server is laid out. Shown instead:
the path relative to the documents folder (`support/warranty.md`), a URL as it is, or, for a file
outside that folder, its name alone.
"""

from __future__ import annotations

from pathlib import PurePath


def display_source(source: str, root: PurePath | None) -> str:
    """`/srv/bot/knowledge_base/docs/support/warranty.md` -> `support/warranty.md` (root = …/docs)."""
    if "://" in source:
        return source
    path = PurePath(source)
    if not path.is_absolute():
        return source
    if root is not None and path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    return path.name
