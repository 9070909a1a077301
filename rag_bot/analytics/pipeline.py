"""The analytics path: question -> schema context -> SQL (LLM) -> guard -> read-only run -> narration.

Self-correction: a PostgreSQL error (or a guard rejection the LLM can fix, such as an unknown table)
goes back to the LLM with the error for up to `max_retries` more attempts; an empty result gets one
"check your filters" retry. Dangerous SQL (writes, system catalogs, server functions) is refused at
once and never retried. Every technique is a switch in `AnalyticsOptions`, so `rag-bot eval sql` can
measure each one.
"""

# ruff: noqa: E501  (prompt and message catalogue lines are kept whole)

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from difflib import SequenceMatcher
from typing import Any, Literal

from rag_bot.analytics.narration import narrate_result, template_answer
from rag_bot.analytics.schema_context import SchemaContext, TableDoc, question_key, retrieve_schema_context
from rag_bot.analytics.sql_generation import (
    EMPTY_RESULT_HINT,
    build_messages,
    generate_sql,
    repair_message,
)
from rag_bot.analytics.sql_guard import DEFAULT_MAX_ROWS, QueryRejected, ValidatedQuery, validate_sql
from rag_bot.analytics.sql_repair import (
    MIN_SIMILARITY,
    Repair,
    SchemaIndex,
    query_columns,
    repair_identifiers,
    schema_index,
    where_columns_live,
)
from rag_bot.analytics.sql_runner import SqlExecutionError, SqlResult, SqlRunner
from rag_bot.embeddings import Embedder
from rag_bot.llm.base import ChatMessage, LLMClient
from rag_bot.store import VectorStore

logger = logging.getLogger(__name__)

Status = Literal["ok", "clarify", "rejected", "error"]
_RETRYABLE_RULES = {"parse", "empty", "table"}


@dataclass(frozen=True)
class AnalyticsOptions:
    """Switches for the small-model techniques. Defaults are unmeasured first guesses: tune them with
    `rag-bot eval sql` (each flag there maps to one field)."""

    constrained: bool = True  # structured (JSON) output instead of parsing free text
    gate: bool = True  # answerable / unclear / no_data decided before any SQL
    examples: int = 3  # solved question->SQL examples retrieved into the prompt (0 = off)
    candidates: int = 1  # >1: sample several queries and vote by execution result
    sample_temperature: float = 0.7
    explain: bool = True  # EXPLAIN before running: errors and absurd plans caught without executing
    max_plan_cost: float = 5e7
    max_retries: int = 2  # repairs after a PostgreSQL error
    repair_identifiers: bool = True  # fix unknown/misplaced tables, columns, join keys against the schema first
    empty_retry: bool = True  # one "check your filters" retry on an empty result
    narrate: bool = True  # LLM narrative (number-checked); False = templated sentence only
    max_tables: int = 6
    schema_char_budget: int = 12000
    max_rows: int = DEFAULT_MAX_ROWS


@dataclass
class AnalyticsAnswer:
    text: str
    sql: str | None
    columns: list[str]
    rows: list[tuple[Any, ...]]
    row_count: int
    retries: int
    status: Status
    timings: dict[str, float] = field(default_factory=dict)
    truncated: bool = False
    rejection_rule: str | None = None  # guard rule that refused the final SQL
    error_kind: str | None = None
    narrative_checked: bool | None = None
    tables: list[str] = field(default_factory=list)  # tables shown to the LLM
    attempts: list[str] = field(default_factory=list)  # every SQL the LLM wrote, in order
    repairs: list[str] = field(default_factory=list)  # deterministic identifier fixes applied
    warning: str | None = None  # "empty": the result had no rows (shown as doubt, not as a fact)


_CLARIFY = {
    "unclear": {
        "en": "Could you make the question more specific (the metric, the period, the grouping)? "
        "I can answer from these data: {tables}.",
        "ru": "Уточните, пожалуйста, вопрос: какой показатель, за какой период, в какой разбивке? "
        "Я могу ответить по этим данным: {tables}.",
    },
    "no_data": {
        "en": "The database has no data to answer this. It holds: {tables}.",
        "ru": "В базе нет данных для ответа на этот вопрос. В ней есть: {tables}.",
    },
}
_MISSING = {
    "en": "The database has no {name} to answer this with, so I did not guess. It holds: {tables}.",
    "ru": "В базе нет данных «{name}» для ответа, поэтому я не стал угадывать. В ней есть: {tables}.",
}
_EMPTY = {
    "en": "The query ran but returned no rows. That can mean there are no such records, or that its filters "
    "(names, codes, dates) do not match how the data are stored: please check the query below.",
    "ru": "Запрос выполнился, но не вернул ни одной строки. Это может значить, что таких записей нет, или что "
    "его условия (названия, коды, даты) не совпадают с тем, как хранятся данные: проверьте запрос ниже.",
}
_MISSING_NAME = re.compile(r'(?:column|relation) "?([\w.]+)"? does not exist')
_FAILED = {
    "en": "I could not build a working query for this question. Try rephrasing it or naming the data you need.",
    "ru": "Не удалось составить работающий запрос для этого вопроса. Попробуйте переформулировать его "
    "или назвать нужные данные.",
}


def _lang(language: str) -> str:
    return "ru" if language == "ru" else "en"


def _fingerprint(result: SqlResult) -> str:
    rows = sorted(repr(tuple(str(v) for v in row)) for row in result.rows)
    return hashlib.sha1("\n".join(rows).encode()).hexdigest()


@dataclass
class _Outcome:
    query: ValidatedQuery | None = None
    result: SqlResult | None = None
    problem: str | None = None  # for the LLM
    rejection: QueryRejected | None = None
    error: SqlExecutionError | None = None

    @property
    def fatal(self) -> bool:
        if self.rejection is not None:
            return self.rejection.rule not in _RETRYABLE_RULES
        return self.error is not None and not self.error.fixable


@dataclass(frozen=True)
class _Allowed:
    """What the guard lets a query read: the ingested tables (bare names) and their schemas."""

    tables: list[str]
    schemas: list[str]


def _allowed(scope: Sequence[TableDoc], runner: SqlRunner) -> _Allowed:
    """The ingested tables and schemas (every schema the role may read, unless narrowed at ingest);
    the runner's own list when the store holds no schema documents."""
    if not scope:
        return _Allowed(runner.table_names(), ["public"])
    return _Allowed(sorted({t.name.rsplit(".", 1)[-1] for t in scope}), sorted({t.schema for t in scope} | {"public"}))


def _index(scope: Sequence[TableDoc]) -> SchemaIndex:
    return schema_index([(t.name, t.schema, [(c, "") for c in t.columns], t.foreign_keys) for t in scope])


def _try(sql: str, runner: SqlRunner, allowed: _Allowed, options: AnalyticsOptions, language: str,
         timings: dict[str, float]) -> _Outcome:
    t = time.perf_counter()
    try:
        query = validate_sql(sql, allowed_tables=allowed.tables, allowed_schemas=allowed.schemas,
                             max_rows=options.max_rows, language=language)
    except QueryRejected as exc:
        timings["guard"] = timings.get("guard", 0.0) + time.perf_counter() - t
        return _Outcome(problem=f"rejected by the SQL guard: {exc.detail}", rejection=exc)
    timings["guard"] = timings.get("guard", 0.0) + time.perf_counter() - t
    t = time.perf_counter()
    try:
        if options.explain:
            plan = runner.explain(query, language=language)
            if plan.total_cost > options.max_plan_cost:
                timings["execute"] = timings.get("execute", 0.0) + time.perf_counter() - t
                return _Outcome(
                    query=query,
                    problem=f"the query plan is far too expensive (cost {plan.total_cost:.0f}); "
                    "avoid cross joins and join on keys",
                    error=SqlExecutionError("", kind="timeout", detail="plan cost", sqlstate=None),
                )
        result = runner.run(query, language=language)
    except SqlExecutionError as exc:
        timings["execute"] = timings.get("execute", 0.0) + time.perf_counter() - t
        return _Outcome(query=query, problem=f"PostgreSQL error: {exc.detail}", error=exc)
    timings["execute"] = timings.get("execute", 0.0) + time.perf_counter() - t
    return _Outcome(query=query, result=result)


def answer_analytics(
    question: str,
    *,
    llm: LLMClient,
    store: VectorStore,
    embedder: Embedder,
    runner: SqlRunner,
    language: str,
    history: Sequence[ChatMessage] | None = None,
    domains: Sequence[str] | None = None,
    example_domains: Sequence[str] | None = None,
    audiences: Sequence[str] = ("public", "internal"),
    options: AnalyticsOptions | None = None,
    today: date | None = None,
    instructions: str | None = None,
) -> AnalyticsAnswer:
    """Answer a data question with one guarded, read-only SQL query.

    Args:
        question: the user's question (ru/en).
        llm, store, embedder, runner: the seams (store holds the schema documents from
            `ingest.db_schema.sync_schema`).
        language: "ru" or "en": the language of every user-visible sentence.
        history: earlier chat turns (their user questions help follow-ups).
        domains: restrict the schema to these store domains (the router's domain, or a database label).
        example_domains: domains of solved examples to retrieve (defaults to `domains`).
        options: technique switches (AnalyticsOptions()).
        today: the date relative periods refer to (the demo data end on 2025-12-31).
        instructions: extra guidance appended to the question (evaluation sets carry some).

    Returns:
        AnalyticsAnswer with status "ok" (rows + text), "clarify" (a question back or what data
        exist), "rejected" (the guard or the database refused) or "error" (no working query).
    """
    opts = options or AnalyticsOptions()
    lang = _lang(language)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    t = time.perf_counter()
    context: SchemaContext = retrieve_schema_context(
        question, store=store, embedder=embedder, domains=domains, audiences=audiences,
        max_tables=opts.max_tables, char_budget=opts.schema_char_budget, examples=opts.examples,
        example_domains=example_domains if example_domains is not None else domains,
    )
    allowed = _allowed(context.scope, runner)
    index = _index(context.scope)
    timings["retrieve"] = time.perf_counter() - t
    messages = build_messages(question, context, today=today or date.today(), constrained=opts.constrained,
                              gate=opts.gate, instructions=instructions, history=history)
    answer = AnalyticsAnswer(text="", sql=None, columns=[], rows=[], row_count=0, retries=0, status="error",
                             tables=context.table_names)

    def generate(msgs: Sequence[ChatMessage], temperature: float | None = None, gate: bool = opts.gate
                 ) -> tuple[str, str]:
        t0 = time.perf_counter()
        gen = generate_sql(llm, msgs, constrained=opts.constrained, gate=gate, temperature=temperature)
        timings["generate"] = timings.get("generate", 0.0) + time.perf_counter() - t0
        answer.attempts.append(gen.sql)
        if not (opts.repair_identifiers and gen.sql and gen.status == "answerable"):
            return gen.status, gen.sql
        t0 = time.perf_counter()
        fixed: Repair = repair_identifiers(gen.sql, index)
        timings["repair"] = timings.get("repair", 0.0) + time.perf_counter() - t0
        answer.repairs += fixed.changes
        return gen.status, fixed.sql

    def finish(status: Status, text: str, outcome: _Outcome | None = None) -> AnalyticsAnswer:
        answer.status = status
        answer.text = text
        if outcome is not None:
            if outcome.query is not None:
                answer.sql = outcome.query.sql
            elif answer.attempts:
                answer.sql = answer.attempts[-1] or None
            if outcome.result is not None:
                answer.columns = outcome.result.columns
                answer.rows = outcome.result.rows
                answer.row_count = outcome.result.row_count
                answer.truncated = outcome.result.truncated or (
                    outcome.query is not None and outcome.query.limit_added
                    and outcome.result.row_count >= outcome.query.limit
                )
            if outcome.rejection is not None:
                answer.rejection_rule = outcome.rejection.rule
            if outcome.error is not None:
                answer.error_kind = outcome.error.kind
        timings["total"] = time.perf_counter() - started
        answer.timings = {k: round(v, 3) for k, v in timings.items()}
        logger.info("analytics %s: %d rows, %d retries, %.1f s", answer.status, answer.row_count,
                    answer.retries, timings["total"])
        return answer

    # What the database holds, for the answers that say it cannot answer.
    tables = ", ".join(context.tables_in_scope or context.table_names) or "-"
    saved = saved_query(question, context.examples)
    if saved is not None:
        # The very question a person saved a checked query for (a starter, a thumbs-up answer): run
        # that query, through the same guard, instead of asking the model to rewrite it. It still
        # falls back to the model if the schema has changed under it.
        outcome = _try(saved, runner, allowed, opts, lang, timings)
        if outcome.result is not None:
            logger.info("analytics used the saved query for this question")
            return _narrated(question, outcome, answer, llm, lang, opts, timings, finish)
        logger.info("the saved query for this question failed (%s); asking the model", outcome.problem)
    status, sql = generate(messages)
    if status != "answerable":
        return finish("clarify", _CLARIFY[status][lang].format(tables=tables))

    outcome = _try(sql, runner, allowed, opts, lang, timings)
    if opts.candidates > 1:
        outcome = _vote(outcome, messages, generate, runner, allowed, opts, lang, timings)

    conversation = list(messages)
    empty_retried = False
    repairs = 0
    tried: set[str] = set()
    while True:
        if outcome.fatal:
            break
        if outcome.result is not None:
            if outcome.result.row_count == 0 and opts.empty_retry and not empty_retried:
                empty_retried = True
                conversation += [ChatMessage("assistant", sql), ChatMessage("user", EMPTY_RESULT_HINT)]
                answer.retries += 1
                status, new_sql = generate(conversation, gate=False)  # a repair always writes SQL
                retry = _try(new_sql, runner, allowed, opts, lang, timings) if new_sql else _Outcome()
                if retry.result is not None and retry.result.row_count > 0:
                    outcome, sql = retry, new_sql
                break
            break
        if repairs >= opts.max_retries:
            break
        repairs += 1
        answer.retries += 1
        tried.add(_normal(sql))
        problem = outcome.problem or "no query was written"
        logger.info("analytics attempt %d failed: %s", repairs, problem[:500])
        unplaced = _MISSING_NAME.findall(problem)
        for name, tables_with_it in where_columns_live(unplaced, index).items():
            problem += f"\n{name} is a column of: {', '.join(tables_with_it)} (join that table)."
        conversation += [ChatMessage("assistant", sql or "(no query)"),
                         repair_message(sql, problem, allowed.tables, columns=query_columns(sql, index))]
        status, sql = generate(conversation, gate=False)
        if _normal(sql) in tried:
            # Greedy decoding repeats itself after an error; sample for a different query, and never
            # send the database (or the next repair turn) a query that already failed.
            status, sql = generate(conversation, opts.sample_temperature, gate=False)
            if _normal(sql) in tried:
                break
        outcome = _try(sql, runner, allowed, opts, lang, timings)

    if outcome.result is None:
        logger.info("analytics gave up: %s", (outcome.problem or "no query was written")[:500])
        missing = _missing_data(outcome)
        if missing and not _named_in_schema(missing, index):
            # Every repair still asked for a column or table the database does not have: the data is
            # not there (Defog's idk questions, "impact factor of journals"). Say so and say what is.
            return finish("clarify", _MISSING[lang].format(name=missing, tables=tables), outcome)
        if outcome.rejection is not None and outcome.rejection.rule not in _RETRYABLE_RULES:
            return finish("rejected", str(outcome.rejection), outcome)
        if outcome.error is not None and not outcome.error.fixable:
            return finish("rejected", str(outcome.error), outcome)
        if outcome.error is not None and outcome.error.kind == "timeout":
            return finish("error", str(outcome.error) if str(outcome.error) else _FAILED[lang], outcome)
        return finish("error", _FAILED[lang], outcome)

    return _narrated(question, outcome, answer, llm, lang, opts, timings, finish)


def _narrated(question: str, outcome: _Outcome, answer: AnalyticsAnswer, llm: LLMClient, lang: str,
              opts: AnalyticsOptions, timings: dict[str, float],
              finish: Callable[[Status, str, _Outcome | None], AnalyticsAnswer]) -> AnalyticsAnswer:
    """The answer for a query that ran: the narrative (or the templated sentence, or the doubt
    about an empty result)."""
    result = outcome.result
    assert result is not None
    t = time.perf_counter()
    truncated = result.truncated or (outcome.query is not None and outcome.query.limit_added
                                     and result.row_count >= outcome.query.limit)
    if result.row_count == 0:
        # No rows is not proof that no such records exist: the filters may not match how the data
        # are stored. Say what happened and show the query, never "no matching records" as a fact.
        text = _EMPTY[lang]
        answer.warning = "empty"
    elif opts.narrate:
        text, checked = narrate_result(question, result.columns, result.rows, llm=llm, language=lang,
                                       truncated=truncated)
        answer.narrative_checked = checked
    else:
        text = template_answer(result.row_count, lang, truncated)
    timings["narrate"] = time.perf_counter() - t
    return finish("ok", text, outcome)


def saved_query(question: str, examples: Sequence[tuple[str, str]]) -> str | None:
    """The SQL of a solved example whose question is this one (same words, any case/punctuation).

    Only the same question: "top customers in 2024" and "in 2025" embed 0.98 apart, so similarity
    alone would answer the wrong year with a saved query.
    """
    words = question_key(question)
    for example_question, sql in examples:
        if words and question_key(example_question) == words:
            return sql
    return None


def _normal(sql: str | None) -> str:
    return " ".join((sql or "").split()).rstrip(";").lower()


def _named_in_schema(name: str, index: SchemaIndex) -> bool:
    """Whether a name the query lacked is (nearly) a real table or column: then the query was wrong,
    not the data missing, and the user must not be told the data are not there."""
    names = {index.bare(t) for t in index.tables} | {c for cols in index.tables.values() for c in cols}
    return any(SequenceMatcher(None, name.lower(), n).ratio() >= MIN_SIMILARITY for n in names)


def _missing_data(outcome: _Outcome) -> str | None:
    """The name of the column or table the final query lacked, when that is why it failed."""
    if outcome.error is None or outcome.error.sqlstate not in {"42703", "42P01"}:
        return None
    match = _MISSING_NAME.search(outcome.error.detail)
    return match.group(1).split(".")[-1] if match else None


def _vote(first: _Outcome, messages: Sequence[ChatMessage], generate: Any, runner: SqlRunner,
          allowed: _Allowed, opts: AnalyticsOptions, lang: str, timings: dict[str, float]) -> _Outcome:
    """Sample more candidates and keep the result most of them agree on (ties: the greedy one)."""
    outcomes = [first]
    for _ in range(opts.candidates - 1):
        status, sql = generate(messages, opts.sample_temperature)
        if status == "answerable" and sql:
            outcomes.append(_try(sql, runner, allowed, opts, lang, timings))
    if any(o.fatal for o in outcomes):
        return next(o for o in outcomes if o.fatal)  # a dangerous candidate is never outvoted
    good = [o for o in outcomes if o.result is not None and o.result.row_count > 0]
    if not good:
        return first
    votes = Counter(_fingerprint(o.result) for o in good if o.result is not None)
    best = max(votes.values())
    for outcome in good:  # first in order among the most-voted = greedy wins ties
        if outcome.result is not None and votes[_fingerprint(outcome.result)] == best:
            return outcome
    return first
