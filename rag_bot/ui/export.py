"""`rag-bot export finetune`: rated chat answers as chat-format JSONL, split into train and validation.

Reads the chat history tables (Chainlit's data layer, schema RAG_BOT_CHAT_SCHEMA) and writes one
example per rated answer that the model wrote from a stored prompt:

    {"messages": [{"role": "system", ...}, {"role": "user", ...}, {"role": "assistant", ...}]}

The system and user messages are exactly what the model saw (the user message holds the retrieved
passages), the assistant message is what it answered. The split is by thread, so turns of one
conversation never land on both sides, and it is the same for the same data and seed.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # imported lazily: `rag-bot --help` should not load the chat stack
    import psycopg

    from rag_bot.ui.chat_history import RatedAnswer


@dataclass
class ExportReport:
    rated: int = 0
    train: int = 0
    validation: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def describe(self, out_dir: Path) -> str:
        lines = [f"{self.rated} rated answers: wrote {self.train} train and {self.validation} validation "
                 f"examples to {out_dir}"]
        lines += [f"  skipped {count}: {reason}" for reason, count in self.skipped.most_common()]
        return "\n".join(lines)


def split_by_thread(
    examples: list[tuple[RatedAnswer, list[dict[str, str]]]], validation_share: float, seed: int
) -> tuple[list[list[dict[str, str]]], list[list[dict[str, str]]]]:
    """Whole threads go to validation (shuffled with `seed`) until it holds about `validation_share`."""
    threads = sorted({answer.thread_id for answer, _ in examples})
    random.Random(seed).shuffle(threads)
    sizes = Counter(answer.thread_id for answer, _ in examples)
    target = round(len(examples) * validation_share)
    if validation_share > 0 and len(examples) >= 2:
        target = max(target, 1)
    chosen: set[str] = set()
    taken = 0
    for thread in threads:
        if taken >= target:
            break
        if taken + sizes[thread] > len(examples) - 1:
            continue  # keep at least one training example
        chosen.add(thread)
        taken += sizes[thread]
    train = [messages for answer, messages in examples if answer.thread_id not in chosen]
    validation = [messages for answer, messages in examples if answer.thread_id in chosen]
    return train, validation


def _write_jsonl(path: Path, rows: list[list[dict[str, str]]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for messages in rows:
            handle.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")


def export_finetune(
    conn: psycopg.Connection,
    schema: str,
    out_dir: Path,
    *,
    min_rating: int = 1,
    validation_share: float = 0.1,
    seed: int = 13,
) -> ExportReport:
    """Write out_dir/train.jsonl and out_dir/validation.jsonl; return what was written and skipped."""
    from rag_bot.ui.chat_history import chat_messages, iter_rated_answers, schema_name, skip_reason

    report = ExportReport()
    examples: list[tuple[RatedAnswer, list[dict[str, str]]]] = []
    table = conn.execute("SELECT to_regclass(%s)", (f'"{schema_name(schema)}".steps',)).fetchone()
    seen: set[str] = set()
    if table is not None and table[0] is not None:
        for answer in iter_rated_answers(conn, schema, min_rating=min_rating):
            if answer.step_id in seen:
                continue  # more than one feedback row for the same answer
            seen.add(answer.step_id)
            report.rated += 1
            messages = chat_messages(answer)
            if messages is None:
                report.skipped[skip_reason(answer)] += 1
            else:
                examples.append((answer, messages))
    train, validation = split_by_thread(examples, validation_share, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out_dir / "train.jsonl", train)
    _write_jsonl(out_dir / "validation.jsonl", validation)
    report.train, report.validation = len(train), len(validation)
    return report


@click.group("export")
def export_cli() -> None:
    """Export what the chat learned from its users."""


@export_cli.command("finetune")
@click.option("--min-rating", type=click.IntRange(0, 1), default=1, show_default=True,
              help="Lowest feedback to include: 1 = thumbs up only, 0 = every rated answer.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for train.jsonl and validation.jsonl.")
@click.option("--validation-share", type=click.FloatRange(0.0, 0.5), default=0.1, show_default=True)
@click.option("--seed", type=int, default=13, show_default=True, help="Seed of the train/validation split.")
def export_finetune_command(min_rating: int, out_dir: Path, validation_share: float, seed: int) -> None:
    """Rated chat answers as chat-format JSONL for fine-tuning (train/validation split by thread)."""
    from rag_bot.config import get_settings
    from rag_bot.db import connect, store_url
    from rag_bot.errors import RagBotError
    from rag_bot.stack.postgres import running_postgres

    settings = get_settings()
    try:
        with running_postgres(settings), connect(store_url(settings)) as conn:
            report = export_finetune(conn, settings.chat_schema, out_dir, min_rating=min_rating,
                                     validation_share=validation_share, seed=seed)
    except RagBotError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(report.describe(out_dir))
