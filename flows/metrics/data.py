"""Metrics of the data, read from the source of truth: each target's ledger and quarantine table.

The ledger has one row per loaded file (written in the transaction that made its rows visible), so
its sums equal the tables' contents. Quarantine counts per reason class need a scan of the
quarantine table; they are read again only when the ledger changed, because both change in the
same transaction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from flows import sql as q
from flows.load.db import transaction
from flows.sql import Names

# Read-only sessions that give up instead of piling up behind a long lock.
SESSION_OPTIONS = "-c default_transaction_read_only=on -c statement_timeout=30000 -c lock_timeout=5000"


@dataclass(frozen=True)
class LedgerFile:
    """One ledger entry: the last load of one file."""

    file: str
    checksum: str
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    loaded_at: float  # epoch seconds
    size_bytes: int | None = None
    load_seconds: float | None = None  # None for entries written before the ledger had it

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> LedgerFile:
        return cls(
            file=row["source_file"],
            checksum=row["checksum"],
            rows_read=int(row["rows_read"]),
            rows_loaded=int(row["rows_loaded"]),
            rows_quarantined=int(row["rows_quarantined"]),
            loaded_at=datetime.fromisoformat(row["loaded_at"]).timestamp(),
            size_bytes=row.get("size_bytes"),
            load_seconds=row.get("load_seconds"),
        )


@dataclass
class TableData:
    schema: str
    table: str
    files: list[LedgerFile]
    quarantine_by_reason: dict[str, int] = field(default_factory=dict)

    def total(self, column: str) -> int:
        return sum(getattr(f, column) for f in self.files)

    @property
    def last_loaded_at(self) -> float | None:
        return max((f.loaded_at for f in self.files), default=None)


@dataclass
class DataSnapshot:
    schema: str
    tables: list[TableData]
    database_size_bytes: int


def ledger_version(files: list[LedgerFile]) -> str:
    """Changes whenever any file is loaded, reloaded or forgotten."""
    text = json.dumps([(f.file, f.checksum, f.loaded_at) for f in files])
    return hashlib.sha256(text.encode()).hexdigest()


class DataReader:
    """Reads every target of one schema; keeps the quarantine counts of each ledger version."""

    def __init__(self, engine: sa.Engine, schema: str):
        self.engine = engine
        self.schema = schema
        self._quarantine: dict[str, tuple[str, dict[str, int]]] = {}  # table -> (ledger version, counts)

    def read(self) -> DataSnapshot:
        with transaction(self.engine) as (_, cur):
            cur.execute(q.metric_targets(), (self.schema,))
            tables = [self._table(cur, Names(self.schema, name)) for (name,) in cur.fetchall()]
            cur.execute(q.database_size())
            size = int(cur.fetchone()[0])
        self._quarantine = {t.table: self._quarantine[t.table] for t in tables if t.table in self._quarantine}
        return DataSnapshot(schema=self.schema, tables=tables, database_size_bytes=size)

    def _table(self, cur: Any, names: Names) -> TableData:
        cur.execute(q.ledger_rows(names))
        files = [LedgerFile.from_json(row) for (row,) in cur.fetchall()]
        version = ledger_version(files)
        cached = self._quarantine.get(names.table)
        if cached is None or cached[0] != version:
            cur.execute(q.quarantine_by_reason_class(names))
            cached = (version, {reason: int(n) for reason, n in cur.fetchall()})
            self._quarantine[names.table] = cached
        return TableData(names.schema, names.table, files, dict(cached[1]))


def data_engine(url: str) -> sa.Engine:
    return sa.create_engine(
        url,
        pool_size=1,
        max_overflow=1,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 10, "options": SESSION_OPTIONS, "application_name": "ecommerce-etl metrics"},
    )
