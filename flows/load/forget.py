"""`forget`: the way out of the identity rule (a file is its name): remove one file's rows,
quarantine rows and ledger entry, in one transaction under the file's lock."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from flows import sql as q
from flows.load.db import transaction
from flows.sql import Names


@dataclass
class Forgotten:
    file: str
    found: bool  # the ledger held the file
    rows_loaded: int = 0
    rows_quarantined: int = 0


def forget_file(engine: sa.Engine, names: Names, source_file: str) -> Forgotten:
    with transaction(engine) as (dbapi, cur):
        cur.execute(*q.advisory_xact_lock(names.lock_key("file", source_file)))
        cur.execute(q.ledger_entry(names), (source_file,))
        entry = cur.fetchone()
        if entry is None:
            dbapi.rollback()
            return Forgotten(source_file, found=False)
        partition = entry[3]
        rows_loaded = 0
        cur.execute(q.attached_partition(names), (partition,))
        if cur.fetchone():
            cur.execute(q.count_rows(names, partition))
            rows_loaded = cur.fetchone()[0]
            cur.execute(q.drop_table(names, partition))
        cur.execute(q.delete_quarantine(names), (source_file,))
        rows_quarantined = cur.rowcount
        cur.execute(q.delete_ledger_entry(names), (source_file,))
        dbapi.commit()
    return Forgotten(source_file, True, rows_loaded, rows_quarantined)
