"""ensure_schema: the target's tables and types, created when missing and refused when the names are
taken by something this pipeline did not create. Existing objects are only read, so no DDL ever
waits behind a running load."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from flows import sql as q
from flows.csv_spec import EVENT_TYPES
from flows.errors import ConfigError
from flows.load.context import Checkpoint
from flows.sql import Names

LOCK_TIMEOUT_SECONDS = 30  # a lock still held by something else after this is an error, not a hang

_RELKINDS = {
    "r": "a table",
    "p": "a partitioned table",
    "v": "a view",
    "m": "a materialized view",
    "i": "an index",
    "I": "a partitioned index",
    "S": "a sequence",
    "f": "a foreign table",
    "c": "a type",
}
_TYPTYPES = {
    "e": "an enum type",
    "d": "a domain",
    "b": "a base type",
    "r": "a range type",
    "m": "a multirange type",
    "p": "a pseudo-type",
}
# columns that identify each of our tables
_SIGNATURES = {
    "": {"event_time", "event_type", "source_file", "source_line", "partition by LIST (source_file)"},
    "_quarantine": {"source_file", "source_line", "raw_line", "reason"},
    "_ledger": {"source_file", "checksum", "partition_name", "rows_read"},
}


def ensure_schema(engine: sa.Engine, names: Names, checkpoint: Checkpoint | None = None) -> None:
    # through SQLAlchemy's connection, so that a refused login arrives as sa.exc.OperationalError
    with engine.begin() as connection, _cursor(connection) as cur:
        cur.execute(q.lock_timeout(LOCK_TIMEOUT_SECONDS))
        cur.execute(*q.advisory_xact_lock(names.lock_key("ddl")))
        cur.execute(q.schema_exists(names))
        if not cur.fetchone()[0]:
            cur.execute(q.create_db_schema(names))
        cur.execute(
            q.schema_objects(names),
            {"relations": list(names.public_relations), "types": [*names.public_relations, *names.public_types]},
        )
        found = cur.fetchall()
        conflicts = [c for c in (_conflict(names, *row) for row in found) if c]
        if conflicts:
            raise ConfigError(
                f"{names.table_setting}={names.table!r} cannot be used in schema {names.schema}: "
                + "; ".join(conflicts)
                + f". Choose another table name ({names.table_setting}), "
                "or drop those objects if nothing needs them."
            )
        existing = {name for _, name, _, _ in found}
        for name, statement in q.create_schema(names):
            if name not in existing:
                if checkpoint:
                    checkpoint("schema.create", "before")
                cur.execute(statement)
        ledger = names.table + "_ledger"
        ledger_columns = next((d for kind, name, _, d in found if kind == "relation" and name == ledger), None)
        if ledger_columns is not None:
            for column, _ in q.LEDGER_ADDED_COLUMNS:
                if column not in ledger_columns:
                    cur.execute(q.add_ledger_column(names, column))


def _cursor(connection: sa.Connection) -> Any:
    dbapi: Any = connection.connection.dbapi_connection
    return dbapi.cursor()


def _conflict(names: Names, namespace: str, name: str, kind: str, details: list[str]) -> str | None:
    """Why this existing object is not the one the target owns under this name, or None."""
    here = f"{names.schema}.{name}"
    if namespace == "relation":
        expected = names.public_relations[name]
        signature = _SIGNATURES[name.removeprefix(names.table)]
        if kind == ("p" if name == names.table else "r") and signature <= set(details):
            return None
        return f"{here} already exists as {_RELKINDS.get(kind, 'a relation')}, not as this pipeline's {expected}"
    if name in names.public_relations:  # a relation's row type is fine when the relation is ours
        if kind == "c" and details == [name]:
            return None
        return (
            f"{here} already exists as {_TYPTYPES.get(kind, 'a type')}, so the {names.public_relations[name]} "
            "cannot be created under that name"
        )
    expected = names.public_types[name]
    if name.endswith("_event_type") and kind == "e" and tuple(details) == EVENT_TYPES:
        return None
    if name.endswith("_price") and kind == "d" and details == ["numeric"]:
        return None
    what = f"the row type of table {names.schema}.{details[0]}" if kind == "c" else _TYPTYPES.get(kind, "a type")
    return f"{here} already exists as {what}, not as this pipeline's {expected}"
