"""What `rag-bot eval sql` asks: questions from any demo-format JSONL or Defog CSV, balanced subsets,
fixed tuning/report splits, and the solved-example pool with its near-copy check.

Splits exist so that tuning never sees the numbers that are reported: `make_split` assigns every id of a
file to `tuning` or `report`, stratified by database, category and language, and the JSON it writes
(`knowledge_base/eval/splits/<file stem>.json`) is committed. Solved examples never come from the
evaluated set itself; they come from a separate pool (a deployment's examples file), and the run says
how many evaluated questions have a near-copy (>= 0.9 similar question or SQL) in that pool, because
a near-copy turns a text-to-SQL question into a lookup.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from rag_bot.evaluation.common import read_jsonl

SPLITS_DIR = Path("knowledge_base/eval/splits")
SPLIT_PARTS = ("tuning", "report")
NEAR_COPY = 0.9


@dataclass(frozen=True)
class EvalItem:
    id: str
    question: str
    database: str  # "demo" or a Defog db name
    category: str
    gold: str | None  # None: unanswerable (the right answer is a clarification)
    language: str = "en"
    domain: str | None = None
    instructions: str | None = None
    today: date | None = None  # the date relative periods refer to (None: the real today)


@dataclass(frozen=True)
class SolvedExample:
    """One question -> SQL pair of the examples pool; `database` None means any database."""

    question: str
    sql: str
    database: str | None = None


def load_jsonl(path: Path) -> list[EvalItem]:
    """The demo-company format: one JSON object per line (id, question, sql, category, language...)."""
    items = []
    for r in read_jsonl(path):
        items.append(
            EvalItem(
                id=r["id"],
                question=r["question"],
                database="demo",
                category=r["category"],
                gold=r.get("sql") if r.get("answerable", True) else None,
                language=r.get("language", "en"),
                domain=r.get("domain"),
                today=date.fromisoformat(r["reference_date"]) if r.get("reference_date") else None,
            )
        )
    return items


def load_defog(path: Path, *, idk: bool = False) -> list[EvalItem]:
    """sql-eval's CSV (question, query, db_name, query_category, instructions); ids follow row order."""
    items = []
    with path.open(encoding="utf-8") as handle:
        for i, row in enumerate(csv.DictReader(handle)):
            prefix = "idk" if idk else "defog"
            question = row["question"]
            items.append(
                EvalItem(
                    id=f"{prefix}-{row['db_name']}-{i:03d}",
                    question=question,
                    database=row["db_name"],
                    category=("idk_" + row["query_category"]) if idk else row["query_category"],
                    gold=None if idk else row["query"],
                    language=guess_language(question),
                    # idk instructions describe sql-eval's answer protocol ("return SELECT 'sorry'"), not the data.
                    instructions=None if idk else (row.get("instructions") or None),
                )
            )
    return items


def guess_language(text: str) -> str:
    """"ru" when the text is mostly Cyrillic, else "en" (Defog CSVs carry no language column)."""
    cyrillic = len(re.findall(r"[а-яё]", text, re.I))
    latin = len(re.findall(r"[a-z]", text, re.I))
    return "ru" if cyrillic > latin else "en"


def _interleave(groups: list[list[EvalItem]]) -> list[EvalItem]:
    return [i for group in itertools.zip_longest(*groups) for i in group if i is not None]


def select_items(items: list[EvalItem], categories: Sequence[str] | None, limit: int | None) -> list[EvalItem]:
    """Filter by category; with a limit, a balanced subset: round-robin over databases, within each
    database over languages, and within each language over categories (Defog's file lists one
    database after another, so the first N rows would all be `academic`; a 20-question subset drawn by
    categories alone got 3 Russian and 17 English questions)."""
    if categories:
        items = [i for i in items if i.category in categories]
    if not limit or limit >= len(items):
        return items
    by_db: dict[str, dict[str, dict[str, list[EvalItem]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for item in items:
        by_db[item.database][item.language][item.category].append(item)
    per_db = [
        _interleave([_interleave(list(by_cat.values())) for by_cat in by_lang.values()]) for by_lang in by_db.values()
    ]
    return _interleave(per_db)[:limit]


# --------------------------------------------------------------------------------------------------
# Tuning / report splits
# --------------------------------------------------------------------------------------------------


def _stable_key(item_id: str, seed: str) -> str:
    return hashlib.sha256(f"{seed}\0{item_id}".encode()).hexdigest()


def make_split(items: Sequence[EvalItem], *, seed: str = "rag_bot") -> dict[str, list[str]]:
    """Half of each (database, category, language) stratum to `report`, the rest to `tuning`.

    Within a stratum the order is a hash of the id (reproducible, not the file's order); odd strata
    give their extra item alternately to each part, so the parts differ by at most one per database.
    """
    strata: dict[tuple[str, str, str], list[EvalItem]] = defaultdict(list)
    for item in items:
        strata[(item.database, item.category, item.language)].append(item)
    parts: dict[str, list[str]] = {"tuning": [], "report": []}
    extra_to_report: dict[str, bool] = defaultdict(lambda: True)
    for key in sorted(strata):
        members = sorted(strata[key], key=lambda i: _stable_key(i.id, seed))
        half = len(members) // 2
        if len(members) % 2:
            if extra_to_report[key[0]]:
                half += 1
            extra_to_report[key[0]] = not extra_to_report[key[0]]
        parts["report"] += [m.id for m in members[:half]]
        parts["tuning"] += [m.id for m in members[half:]]
    return {part: sorted(ids) for part, ids in parts.items()}


def split_path(source: Path, splits_dir: Path = SPLITS_DIR) -> Path:
    """Where the committed split of an input file lives: `<splits_dir>/<file stem>.json`."""
    return splits_dir / f"{source.stem}.json"


def write_split(items: Sequence[EvalItem], source: Path, out: Path, *, seed: str = "rag_bot") -> dict[str, Any]:
    """Write the split of one input file (ids per part, with the counts it balanced) as JSON."""
    parts = make_split(items, seed=seed)
    by_id = {i.id: i for i in items}
    payload: dict[str, Any] = {"source": source.name, "seed": seed, "n": len(items)}
    for part, ids in parts.items():
        chosen = [by_id[i] for i in ids]
        payload[f"{part}_counts"] = {
            "databases": _counts(i.database for i in chosen),
            "languages": _counts(i.language for i in chosen),
        }
    payload.update(parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return payload


def _counts(values: Any) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for v in values:
        out[v] += 1
    return dict(sorted(out.items()))


def apply_split(items: list[EvalItem], split: str, split_file: Path) -> list[EvalItem]:
    """The items of one part of a committed split; ids of the file missing from the split are an error
    (the file changed since the split was written)."""
    if split == "all":
        return items
    if not split_file.exists():
        raise FileNotFoundError(
            f"No split file {split_file}. Write one with `rag-bot eval sql-split INPUT` (and commit it), "
            "or run with --split all."
        )
    data = json.loads(split_file.read_text(encoding="utf-8"))
    known = set(data["tuning"]) | set(data["report"])
    unknown = sorted(i.id for i in items if i.id not in known)
    if unknown:
        raise ValueError(
            f"{len(unknown)} questions are in neither part of {split_file} (e.g. {unknown[0]}): the input "
            "changed since the split was written. Write a new split with `rag-bot eval sql-split`."
        )
    wanted = set(data[split])
    return [i for i in items if i.id in wanted]


# --------------------------------------------------------------------------------------------------
# The solved-example pool
# --------------------------------------------------------------------------------------------------


def load_examples(path: Path) -> list[SolvedExample]:
    """A YAML list of {question, sql[, database]} (the format of knowledge_base/db/examples.yaml)."""
    import yaml

    items = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a YAML list of {{question, sql}} items.")
    out = []
    for n, item in enumerate(items):
        if not isinstance(item, dict) or "question" not in item or "sql" not in item:
            raise ValueError(f"{path}: item {n + 1} needs a question and an sql.")
        out.append(SolvedExample(str(item["question"]), str(item["sql"]), item.get("database")))
    return out


def _normal(text: str) -> str:
    return " ".join(text.lower().replace(";", " ").split())


def similarity(a: str, b: str, floor: float = 0.0) -> float:
    """Character-level similarity (difflib ratio) after lower-casing and collapsing whitespace, 0..1.

    Below `floor` it may return 0.0 without computing the ratio (difflib's cheap upper bounds say so),
    which keeps a pool of thousands of examples fast."""
    matcher = SequenceMatcher(None, _normal(a), _normal(b), autojunk=False)
    if matcher.real_quick_ratio() < floor or matcher.quick_ratio() < floor:
        return 0.0
    return matcher.ratio()


def near_copies(
    items: Sequence[EvalItem], pool: Sequence[SolvedExample], threshold: float = NEAR_COPY
) -> dict[str, dict[str, Any]]:
    """Evaluated items with a pool example whose question or SQL (any gold variant) is >= threshold similar."""
    from rag_bot.evaluation.sql_scoring import expand_gold_variants

    found: dict[str, dict[str, Any]] = {}
    for item in items:
        golds = expand_gold_variants(item.gold) if item.gold else []
        best: tuple[float, str, str] = (0.0, "", "")
        for example in pool:
            if example.database not in (None, item.database):
                continue
            q = similarity(item.question, example.question, threshold)
            s = max((similarity(g, example.sql, threshold) for g in golds), default=0.0)
            if max(q, s) > best[0]:
                best = (max(q, s), "question" if q >= s else "sql", example.question)
        if best[0] >= threshold:
            found[item.id] = {"similarity": round(best[0], 3), "by": best[1], "example": best[2]}
    return found
