"""`rag-bot eval sql`: execution accuracy of the analytics path (placeholder, filled below)."""

from __future__ import annotations

import itertools
import re


def expand_gold_variants(query: str) -> list[str]:
    """All acceptable gold queries of one sql-eval cell.

    sql-eval conventions: several gold queries are separated by `;`; `{a, b}` lists alternative output
    columns, any non-empty combination of which is acceptable, and a later `GROUP BY {}` repeats the
    chosen columns.
    """
    variants: list[str] = []
    for part in query.split(";"):
        part = part.strip()
        if not part:
            continue
        match = re.search(r"\{([^{}]+)\}", part)
        if match is None:
            variants.append(part)
            continue
        options = [o.strip() for o in match.group(1).split(",") if o.strip()]
        head, tail = part[: match.start()], part[match.end():]
        for size in range(1, len(options) + 1):
            for combo in itertools.combinations(options, size):
                columns = ", ".join(combo)
                variants.append(head + columns + tail.replace("GROUP BY {}", f"GROUP BY {columns}"))
    return variants
