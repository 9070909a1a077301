"""Ground a generated query's identifiers in the real schema, deterministically, before running it.

A small model writes `sbticker.tickersymbol` for `sbtickersymbol`, `sbtransaction.sbtickerid` for
`sbtxtickerid`, or a column on the wrong table; asked to repair at temperature 0 it resends the same
query. Most of these have one obvious fix that needs no LLM: the nearest existing column of the table
(string similarity), the table that really has the column, a join key from the foreign-key graph, a
schema qualifier the database needs. The query is first checked with sqlglot's `qualify` against the
schema; only a query it cannot resolve is touched, and only the identifiers that do not exist change.
What stays unresolved is returned with the real candidate names, for the LLM's repair turn.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher

import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, ParseError, SqlglotError, TokenError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, traverse_scope

logger = logging.getLogger(__name__)

MIN_SIMILARITY = 0.8  # below it a "nearest" name is a guess, not a typo: left to the LLM


@dataclass(frozen=True)
class SchemaIndex:
    """Tables as queries must name them (`orders`, `consumer_div.customers`), their columns and FKs.

    Args:
        tables: qualified-as-written table name -> column name -> type (all lower case).
        foreign_keys: (table, column, referenced table, referenced column), declared or inferred.
        schemas: table name -> its database schema (for `qualify`); default "public".
    """

    tables: dict[str, dict[str, str]]
    foreign_keys: tuple[tuple[str, str, str, str], ...] = ()
    schemas: dict[str, str] = field(default_factory=dict)

    def bare(self, table: str) -> str:
        return table.rsplit(".", 1)[-1]

    def resolve(self, name: str, db: str = "") -> str | None:
        """The indexed name of a table reference, or None when no table has that name."""
        key = f"{db}.{name}".lower() if db else name.lower()
        if key in self.tables:
            return key
        if db and db.lower() == self.schemas.get(name.lower(), "public") and name.lower() in self.tables:
            return name.lower()
        matches = [t for t in self.tables if self.bare(t) == name.lower()]
        return matches[0] if len(matches) == 1 else None

    def sqlglot_schema(self) -> dict[str, dict[str, dict[str, str]]]:
        nested: dict[str, dict[str, dict[str, str]]] = {}
        for table, columns in self.tables.items():
            schema = self.schemas.get(table, table.rsplit(".", 1)[0] if "." in table else "public")
            nested.setdefault(schema, {})[self.bare(table)] = {c: (t or "text") for c, t in columns.items()}
        return nested


@dataclass
class Repair:
    """The query after deterministic repair: what changed, and what is still unknown (for the LLM)."""

    sql: str
    changes: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    candidates: dict[str, list[str]] = field(default_factory=dict)  # table -> its columns, for the LLM

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def _similarity(a: str, b: str) -> float:
    return SequenceMatcher(None, a.lower(), b.lower()).ratio()


def _nearest(name: str, options: Iterable[str]) -> tuple[str, float]:
    best, score = "", 0.0
    for option in options:
        s = _similarity(name, option)
        if s > score:
            best, score = option, s
    return best, score


def unresolved_reason(sql: str, index: SchemaIndex) -> str | None:
    """None when sqlglot's `qualify` resolves every table and column against the schema, else why not."""
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
        schema: dict[str, object] = dict(index.sqlglot_schema())  # qualify's (invariant) parameter type
        qualify(tree, schema=schema, db="public", dialect="postgres",
                validate_qualify_columns=True, quote_identifiers=False)
    except (ParseError, TokenError):
        return None  # the guard reports parse errors
    except OptimizeError as exc:
        return str(exc)
    except SqlglotError as exc:  # qualify's own limits: not evidence of a wrong identifier
        logger.debug("qualify could not check the query: %s", exc)
        return None
    return None


def repair_identifiers(sql: str, index: SchemaIndex) -> Repair:
    """Fix unknown tables and columns of one query; the text is unchanged when nothing was wrong.

    Tables and join keys are always checked (a join on the wrong key runs and returns wrong rows,
    `qualify` cannot see it); columns only when `qualify` cannot resolve the query.
    """
    if not index.tables:
        return Repair(sql)
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except (ParseError, TokenError):
        return Repair(sql)
    repair = Repair(sql)
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    _repair_tables(tree, index, ctes, repair)
    try:
        scopes = traverse_scope(tree)
    except SqlglotError:
        scopes = []
    for scope in scopes:
        _repair_join_keys(scope, index, repair)
    if unresolved_reason(tree.sql(dialect="postgres"), index) is not None:
        for scope in scopes:
            _repair_columns(scope, index, repair)
    if repair.changes:
        repair.sql = tree.sql(dialect="postgres")
        logger.info("identifier repair: %s", "; ".join(repair.changes))
    return repair


def _repair_tables(tree: exp.Expr, index: SchemaIndex, ctes: set[str], repair: Repair) -> None:
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier) or (not table.db and table.name.lower() in ctes):
            continue
        found = index.resolve(table.name, table.db)
        if found is None:
            nearest, score = _nearest(table.name, [index.bare(t) for t in index.tables])
            if score < MIN_SIMILARITY:
                repair.unresolved.append(f"table {table.sql()}")
                continue
            found = index.resolve(nearest)
            if found is None:
                continue
            repair.changes.append(f"table {table.name} -> {found}")
            _write_table(table, found, index)
        elif _write_table(table, found, index):
            repair.changes.append(f"table {table.name} -> {found} (qualified)")


def _write_table(table: exp.Table, found: str, index: SchemaIndex) -> bool:
    """Name the table exactly as the index does (qualified when the database needs it); False when it
    already was."""
    schema, _, name = found.rpartition(".")
    before = (table.db.lower(), table.name.lower())
    own_schema = index.schemas.get(name, "public")
    if before == (schema, name) or (not schema and before[1] == name and before[0] in ("", own_schema)):
        return False
    alias = table.alias
    table.set("this", exp.to_identifier(name))
    table.set("db", exp.to_identifier(schema) if schema else None)
    if not alias and before[1] != name:
        table.set("alias", exp.TableAlias(this=exp.to_identifier(before[1])))  # keep `old.col` references valid
    return True


def _base_tables(scope: Scope, index: SchemaIndex) -> dict[str, str]:
    """alias -> indexed table name, for the base tables of one scope."""
    out: dict[str, str] = {}
    for alias, source in scope.sources.items():
        if isinstance(source, exp.Table):
            found = index.resolve(source.name, source.db)
            if found:
                out[alias.lower()] = found
    return out


def _derived_columns(scope: Scope) -> set[str]:
    names: set[str] = set()
    for source in scope.sources.values():
        if isinstance(source, Scope) and isinstance(source.expression, (exp.Select, exp.SetOperation)):
            names |= {n.lower() for n in source.expression.named_selects}
    return names


def _fk_targets(index: SchemaIndex, table: str, column: str, other: str) -> set[str]:
    """The columns of `other` that `table.column` references or that reference it."""
    out = set()
    for t, c, rt, rc in index.foreign_keys:
        if t == table and c == column and rt == other:
            out.add(rc)
        if rt == table and rc == column and t == other:
            out.add(c)
    return out


def _single(targets: set[str]) -> str | None:
    return next(iter(targets)) if len(targets) == 1 else None


def _repair_join_keys(scope: Scope, index: SchemaIndex, repair: Repair) -> None:
    """`JOIN b ON b.x = a.y` where a.y is a foreign key to b but x is not its target: use the target
    (the demo's `returns.order_item_id = order_items.order_id`); likewise an unknown key column."""
    tables = _base_tables(scope, index)
    select = scope.expression
    if not isinstance(select, exp.Select):
        return
    for join in select.args.get("joins") or []:
        on = join.args.get("on")
        if on is None:
            continue
        for eq in on.find_all(exp.EQ):
            left, right = eq.this, eq.expression
            if not (isinstance(left, exp.Column) and isinstance(right, exp.Column)):
                continue
            for a, b in ((left, right), (right, left)):
                ta, tb = tables.get(a.table.lower()), tables.get(b.table.lower())
                if not ta or not tb or ta == tb:
                    continue
                a_known = a.name.lower() in index.tables[ta]
                b_known = b.name.lower() in index.tables[tb]
                targets = _fk_targets(index, ta, a.name.lower(), tb) if a_known else set()
                target = _single(targets)
                if target and b.name.lower() not in targets:
                    repair.changes.append(f"join key {b.table}.{b.name} -> {b.table}.{target} (foreign key)")
                    b.set("this", exp.to_identifier(target))
                    break
                if a_known and not b_known:
                    continue
                if not a_known and b_known:
                    # The unknown side takes the column that references (or is referenced by) the known one.
                    target = _single(_fk_targets(index, tb, b.name.lower(), ta))
                    if target:
                        repair.changes.append(f"join key {a.table}.{a.name} -> {a.table}.{target} (foreign key)")
                        a.set("this", exp.to_identifier(target))
                        break


def _repair_columns(scope: Scope, index: SchemaIndex, repair: Repair) -> None:
    tables = _base_tables(scope, index)
    if not tables:
        return
    derived = _derived_columns(scope)
    select = scope.expression
    aliases = {n.lower() for n in select.named_selects} if isinstance(select, exp.Select) else set()
    for column in scope.columns:
        name = column.name.lower()
        qualifier = column.table.lower()
        if qualifier and qualifier not in tables:
            owner = [a for a, t in tables.items() if index.bare(t) == qualifier or t == qualifier]
            if len(owner) == 1:  # `orders.status` where orders is aliased `o`
                before = column.sql()
                column.set("table", exp.to_identifier(owner[0]))
                repair.changes.append(f"column {before} -> {column.sql()} (the table's alias)")
                qualifier = owner[0]
            elif qualifier in {a.lower() for a in scope.sources}:
                continue  # a derived table or CTE: its columns are its own business
            elif _join_missing_table(scope, qualifier, tables, index, repair):
                pass  # `order_items.quantity` with order_items never joined: joined on its foreign key
            else:
                repair.unresolved.append(f"column {column.sql()}")
                continue
        in_scope = [qualifier] if qualifier else list(tables)
        if any(name in index.tables[tables[a]] for a in in_scope):
            continue
        if not qualifier and (name in derived or name in aliases):
            continue
        _fix_column(column, name, qualifier, tables, index, repair)
    for table, columns in ((t, sorted(index.tables[t])) for t in dict.fromkeys(tables.values())):
        repair.candidates.setdefault(table, columns)


def _join_missing_table(scope: Scope, qualifier: str, tables: dict[str, str], index: SchemaIndex,
                        repair: Repair) -> bool:
    """Join a real table that a column names but the query never joined, when exactly one foreign key
    links it to exactly one table in scope; `tables` gains it. False (nothing changed) otherwise."""
    select = scope.expression
    found = index.resolve(qualifier)
    if found is None or not isinstance(select, exp.Select) or select.args.get("from_") is None:
        return False
    links = [(alias, column, target_column)
             for alias, table in tables.items()
             for t, column, rt, target_column in index.foreign_keys
             if t == table and rt == found] + [
             (alias, target_column, column)
             for alias, table in tables.items()
             for t, column, rt, target_column in index.foreign_keys
             if rt == table and t == found]
    if len(links) != 1:
        return False
    alias, own, theirs = links[0]
    schema, _, name = found.rpartition(".")
    table_sql = f"{schema}.{name}" if schema else name
    select.join(f"{table_sql} AS {qualifier}", on=f"{qualifier}.{theirs} = {alias}.{own}", copy=False,
                dialect="postgres")
    tables[qualifier] = found
    repair.changes.append(f"joined {found} AS {qualifier} ON {qualifier}.{theirs} = {alias}.{own} (foreign key)")
    return True


def _fix_column(column: exp.Column, name: str, qualifier: str, tables: dict[str, str], index: SchemaIndex,
                repair: Repair) -> None:
    """Nearest column of its own table, else the one table in scope that has it, else the nearest anywhere in scope."""
    before = column.sql()
    if qualifier:
        nearest, score = _nearest(name, index.tables[tables[qualifier]])
        if score >= MIN_SIMILARITY:
            column.set("this", exp.to_identifier(nearest))
            repair.changes.append(f"column {before} -> {column.sql()}")
            return
    owners = [a for a, t in tables.items() if name in index.tables[t]]
    if len(owners) == 1:
        column.set("table", exp.to_identifier(owners[0]))
        repair.changes.append(f"column {before} -> {column.sql()} (the table that has it)")
        return
    best: tuple[float, str, str] = (0.0, "", "")
    for alias, table in tables.items():
        nearest, score = _nearest(name, index.tables[table])
        if score > best[0]:
            best = (score, alias, nearest)
    if best[0] >= MIN_SIMILARITY:
        column.set("this", exp.to_identifier(best[2]))
        if qualifier or len(tables) > 1:
            column.set("table", exp.to_identifier(best[1]))
        repair.changes.append(f"column {before} -> {column.sql()}")
        return
    repair.unresolved.append(f"column {before}")


def schema_index(tables: Sequence[tuple[str, str, Sequence[tuple[str, str]], Sequence[Sequence[str]]]]) -> SchemaIndex:
    """Build the index from (qualified name, schema, [(column, type)], [(column, ref table, ref column)])."""
    columns = {name.lower(): {c.lower(): t for c, t in cols} for name, _, cols, _ in tables}
    schemas = {name.lower(): schema for name, schema, _, _ in tables}
    fks = tuple((name.lower(), c.lower(), rt.lower(), rc.lower()) for name, _, _, refs in tables for c, rt, rc in refs)
    return SchemaIndex(columns, fks, schemas)


def where_columns_live(names: Iterable[str], index: SchemaIndex, limit: int = 3) -> dict[str, list[str]]:
    """For column names a query could not place: the tables anywhere in the schema that have them
    (exactly, or nearly), so the repair turn can join the right table instead of guessing again."""
    out: dict[str, list[str]] = {}
    for name in names:
        bare = name.rsplit(".", 1)[-1].lower()
        exact = [t for t, cols in index.tables.items() if bare in cols]
        near = [t for t, cols in index.tables.items() if _nearest(bare, cols)[1] >= MIN_SIMILARITY]
        if exact or near:
            out[bare] = (exact or near)[:limit]
    return out


def query_columns(sql: str, index: SchemaIndex, limit: int = 4) -> dict[str, list[str]]:
    """The real columns of the tables a query reads (at most `limit` tables), for the LLM's repair turn."""
    try:
        tree = sqlglot.parse_one(sql or "", read="postgres")
    except (ParseError, TokenError):
        return {}
    if tree is None:
        return {}
    out: dict[str, list[str]] = {}
    for table in tree.find_all(exp.Table):
        found = index.resolve(table.name, table.db) if isinstance(table.this, exp.Identifier) else None
        if found and found not in out and len(out) < limit:
            out[found] = sorted(index.tables[found])
    return out
