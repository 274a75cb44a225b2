"""Connections for the load: one transaction per use, notices kept, never back in the pool dead."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg2
import sqlalchemy as sa

from flows import sql as q
from flows.sql import Names
from flows.transform import SkippedRow, parse_skip_notice


@contextlib.contextmanager
def transaction(engine: sa.Engine) -> Iterator[tuple[Any, Any]]:
    """One connection and transaction: (dbapi connection, cursor), notices kept, UTC session;
    rolled back on any error and always returned to the pool."""
    conn = engine.raw_connection()
    try:
        dbapi: Any = conn.dbapi_connection
        dbapi.notices = collections.deque()  # unbounded: every skipped row sends one
        with dbapi.cursor() as cur:
            cur.execute(q.session_setup())
            yield dbapi, cur
    except BaseException:
        try:
            if conn.dbapi_connection is not None:
                conn.dbapi_connection.rollback()
        except psycopg2.Error:  # the connection died (server restart): raise the error that killed
            conn.invalidate()  # it, not "connection already closed", and keep it out of the pool
        raise
    finally:
        if conn.dbapi_connection is not None:
            conn.dbapi_connection.notices = []  # what SQLAlchemy expects of a pooled connection
        conn.close()


def drain_skips(conn: Any, cur: Any) -> list[SkippedRow]:
    """The rows COPY skipped: its notices reach psycopg2 with the next statement."""
    cur.execute(q.deliver_notices())
    notices = list(conn.notices)
    conn.notices.clear()
    return [s for s in map(parse_skip_notice, notices) if s]


def drop_quietly(engine: sa.Engine, names: Names, tables: list[str]) -> None:
    """Best effort after a failure; the next load of the file drops whatever is still there."""
    if not tables:
        return
    try:
        with transaction(engine) as (dbapi, cur):
            for table in tables:
                cur.execute(q.drop_table(names, table))
            dbapi.commit()
    except Exception:
        pass
