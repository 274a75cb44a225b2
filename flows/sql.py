"""Every SQL statement the pipeline runs. Identifiers are composed with psycopg2.sql, never formatted."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2 import sql

from flows.schema import CSV_COLUMNS, CSV_HEADER, EVENT_TYPES, LOADED_COLUMNS, check_identifier

COPY_OPTIONS = sql.SQL("(FORMAT csv, ON_ERROR ignore, LOG_VERBOSITY verbose)")


@dataclass(frozen=True)
class Names:
    """Qualified names of everything one target table owns."""

    schema: str
    table: str

    def __post_init__(self):
        check_identifier(self.schema, "ETL_SCHEMA")
        check_identifier(self.table, "ETL_TABLE")

    def ident(self, suffix: str = "") -> sql.Composed:
        return sql.Identifier(self.schema, self.table + suffix)

    @property
    def events(self):
        return self.ident()

    @property
    def quarantine(self):
        return self.ident("_quarantine")

    @property
    def ledger(self):
        return self.ident("_ledger")

    @property
    def event_type(self):
        return self.ident("_event_type")

    @property
    def price(self):
        return self.ident("_price")

    def lock_key(self, *parts: str) -> str:
        return ":".join((self.schema, self.table, *parts))


def _column_type(names: Names, sql_type: str) -> sql.Composable:
    if sql_type == "{event_type}":
        return names.event_type
    if sql_type == "{price}":
        return names.price
    return sql.SQL(sql_type)


def _column_defs(names: Names, columns) -> list[sql.Composable]:
    return [
        sql.SQL("{} {}{}").format(
            sql.Identifier(c.name),
            _column_type(names, c.sql_type),
            sql.SQL(" NOT NULL" if c.required else ""),
        )
        for c in columns
    ]


def advisory_xact_lock(key: str) -> tuple[sql.Composable, tuple]:
    return sql.SQL("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"), (key,)


def create_schema(names: Names) -> list[sql.Composable]:
    """Idempotent DDL; run under an advisory lock so concurrent first runs don't race."""
    enum_values = sql.SQL(", ").join(sql.Literal(v) for v in EVENT_TYPES)
    return [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(names.schema)),
        sql.SQL(
            "DO $$ BEGIN CREATE TYPE {} AS ENUM ({}); EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        ).format(names.event_type, enum_values),
        # A domain, not a CHECK: domain violations are soft errors, so COPY ON_ERROR ignore
        # quarantines a NaN price instead of aborting the whole file.
        sql.SQL(
            "DO $$ BEGIN CREATE DOMAIN {} AS numeric CHECK (VALUE NOT IN ('NaN', 'Infinity', '-Infinity'));"
            " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        ).format(names.price),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ({}, source_file text NOT NULL, source_line bigint NOT NULL)"
            " PARTITION BY LIST (source_file)"
        ).format(names.events, sql.SQL(", ").join(_column_defs(names, LOADED_COLUMNS))),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (source_file text NOT NULL, source_line bigint NOT NULL,"
            " raw_line text NOT NULL, reason text NOT NULL, run_id text,"
            " quarantined_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (source_file, source_line))"
        ).format(names.quarantine),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (source_file text PRIMARY KEY, checksum text NOT NULL,"
            " partition_name text NOT NULL, rows_read bigint NOT NULL, rows_loaded bigint NOT NULL,"
            " rows_quarantined bigint NOT NULL, run_id text, loaded_at timestamptz NOT NULL DEFAULT now())"
        ).format(names.ledger),
    ]


def ledger_checksum(names: Names) -> sql.Composable:
    return sql.SQL("SELECT checksum FROM {} WHERE source_file = %s").format(names.ledger)


def create_stage(names: Names, stage: str, sequence: str, source_file: str) -> list[sql.Composable]:
    """A typed staging table that becomes the file's partition.

    source_file is a constant default with a matching CHECK, so ATTACH PARTITION needs no scan;
    source_line comes from a sequence starting at line 2 (after the header). Rows that COPY
    skips still draw a number, so the numbers stay equal to line numbers.
    """
    stage_id = sql.Identifier(names.schema, stage)
    seq_id = sql.Identifier(names.schema, sequence)
    literal = sql.Literal(source_file)
    return [
        # only this transaction draws from it, so a cached sequence still gives contiguous numbers
        sql.SQL("CREATE SEQUENCE {} START 2 CACHE 10000").format(seq_id),
        sql.SQL(
            "CREATE TABLE {} ({}, source_file text NOT NULL DEFAULT {} CHECK (source_file = {}),"
            " source_line bigint NOT NULL DEFAULT nextval({}))"
        ).format(
            stage_id,
            sql.SQL(", ").join(_column_defs(names, CSV_COLUMNS)),
            literal,
            literal,
            sql.Literal(f"{names.schema}.{sequence}"),
        ),
    ]


def copy_raw(names: Names, stage: str, file_columns: tuple[str, ...]) -> sql.Composable:
    """Fast path: the file's own bytes, columns in the file's order."""
    return sql.SQL("COPY {} ({}) FROM STDIN WITH {}").format(
        sql.Identifier(names.schema, stage),
        sql.SQL(", ").join(map(sql.Identifier, file_columns)),
        COPY_OPTIONS,
    )


def copy_checked(names: Names, stage: str) -> sql.Composable:
    """Careful path: records re-serialized in CSV_HEADER order with their source line."""
    return sql.SQL("COPY {} ({}, source_line) FROM STDIN WITH {}").format(
        sql.Identifier(names.schema, stage),
        sql.SQL(", ").join(map(sql.Identifier, CSV_HEADER)),
        COPY_OPTIONS,
    )


def truncate(names: Names, table: str) -> sql.Composable:
    return sql.SQL("TRUNCATE {}").format(sql.Identifier(names.schema, table))


def existing_partition(names: Names) -> sql.Composable:
    return sql.SQL(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = {}::regclass AND pg_get_expr(c.relpartbound, c.oid) = format('FOR VALUES IN (%%L)', %s)"
    ).format(sql.Literal(f'"{names.schema}"."{names.table}"'))


def promote_stage(names: Names, stage: str, sequence: str, old_partition: str | None, source_file: str):
    """Turn the staging table into the file's partition, replacing the old one, in the caller's transaction.

    DROP COLUMN only marks category_code dropped (no rewrite), and the CHECK makes ATTACH skip
    its validation scan: the swap costs milliseconds whatever the file size.
    """
    stage_id = sql.Identifier(names.schema, stage)
    statements = [
        sql.SQL(
            "ALTER TABLE {} DROP COLUMN category_code, ALTER COLUMN source_file DROP DEFAULT,"
            " ALTER COLUMN source_line DROP DEFAULT"
        ).format(stage_id),
        sql.SQL("DROP SEQUENCE {}").format(sql.Identifier(names.schema, sequence)),
    ]
    if old_partition:
        statements.append(sql.SQL("DROP TABLE {}").format(sql.Identifier(names.schema, old_partition)))
    statements.append(
        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
            names.events, stage_id, sql.Literal(source_file)
        )
    )
    return statements


def delete_quarantine(names: Names) -> sql.Composable:
    return sql.SQL("DELETE FROM {} WHERE source_file = %s").format(names.quarantine)


def copy_quarantine(names: Names) -> sql.Composable:
    return sql.SQL(
        "COPY {} (source_file, source_line, raw_line, reason, run_id) FROM STDIN WITH (FORMAT csv)"
    ).format(names.quarantine)


def upsert_ledger(names: Names) -> sql.Composable:
    return sql.SQL(
        "INSERT INTO {} (source_file, checksum, partition_name, rows_read, rows_loaded, rows_quarantined, run_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (source_file) DO UPDATE SET"
        " checksum = EXCLUDED.checksum, partition_name = EXCLUDED.partition_name,"
        " rows_read = EXCLUDED.rows_read, rows_loaded = EXCLUDED.rows_loaded,"
        " rows_quarantined = EXCLUDED.rows_quarantined, run_id = EXCLUDED.run_id, loaded_at = now()"
    ).format(names.ledger)


def count_rows(names: Names, stage: str) -> sql.Composable:
    return sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(names.schema, stage))


def session_setup() -> sql.Composable:
    # Timestamps carry " UTC"; the session zone only affects display.
    return sql.SQL("SET TIME ZONE 'UTC'")
