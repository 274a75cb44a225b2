"""Every SQL statement the pipeline runs. Identifiers are composed with psycopg2.sql, never formatted."""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg2 import sql

from flows.csv_spec import CSV_COLUMNS, EVENT_TYPES, LOADED_COLUMNS
from flows.identifiers import check_identifier, check_schema_name

# No FREEZE, although every COPY goes into a table created in its own transaction: frozen rows are visible to
# REPEATABLE READ snapshots taken before the load once the partition is attached, without the file's ledger
# entry (measured; and it saved no load time or server CPU, only a later VACUUM's freezing).
COPY_OPTIONS = sql.SQL("(FORMAT csv, ON_ERROR ignore, LOG_VERBOSITY verbose)")


@dataclass(frozen=True)
class Names:
    """Qualified names of everything one target table owns.

    Public objects are <table>, <table>_quarantine, <table>_ledger and the types <table>_event_type
    and <table>_price; flows.load.ddl refuses a table name whose objects would meet another's.
    Internal objects (a file's partition, its segments and their line-number sequences) carry a "$",
    which no table name may contain, so they cannot meet anything a table name derives.
    `table_setting` names where the table name came from, for error messages.
    """

    schema: str
    table: str
    table_setting: str = field(default="ETL_TABLE", compare=False)

    def __post_init__(self):
        check_schema_name(self.schema, "ETL_SCHEMA")
        check_identifier(self.table, self.table_setting)

    def ident(self, suffix: str = "") -> sql.Composable:
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
        """An advisory lock key (PostgreSQL hashes it to 64 bits). Two keys that hash alike share one
        lock: their holders wait for each other, never act on each other's objects."""
        return ":".join((self.schema, self.table, *parts))

    @property
    def segment_prefix(self) -> str:
        """Every segment table of this target starts with it (also those named by a
        short hash of the file name: `<table>$s<8 hex>...`)."""
        return f"{self.table}$s"

    @property
    def public_relations(self) -> dict[str, str]:
        """name -> what it is, for the tables this target owns"""
        return {
            self.table: "events table",
            self.table + "_quarantine": "quarantine table",
            self.table + "_ledger": "ledger table",
        }

    @property
    def public_types(self) -> dict[str, str]:
        return {self.table + "_event_type": "event type enum", self.table + "_price": "price domain"}


MAX_IDENTIFIER_BYTES = 63  # PostgreSQL cuts longer names, so two could become one


@dataclass(frozen=True)
class FileNames:
    """Names of the internal objects of one load of one file: `<table>$p_<load id>` (the file's
    partition), `<table>$s_<load id>_<segment>` and `<table>$n_<load id>_<segment>` (its segment tables
    and their line-number sequences). The load id is drawn from the ledger's identity column, so no two
    loads, of any files, ever share a name. Which file a segment table holds is proven by its own CHECK
    constraint (`orphan_of_file`), never read from its name."""

    names: Names
    load_id: int

    def _name(self, kind: str, *parts: int | str) -> str:
        name = f"{self.names.table}${kind}_" + "_".join(map(str, (self.load_id, *parts)))
        if len(name.encode()) > MAX_IDENTIFIER_BYTES:  # a 40-character table leaves room for 10^17 loads
            raise RuntimeError(f"internal table name {name!r} would exceed {MAX_IDENTIFIER_BYTES} bytes")
        return name

    @property
    def partition(self) -> str:
        return self._name("p")

    def segment(self, index: int | str) -> str:
        return self._name("s", index)

    def sequence(self, index: int) -> str:
        return self._name("n", index)


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


def create_schema(names: Names) -> list[tuple[str, sql.Composable]]:
    """(name, statement) for every object a target owns; flows.load.ddl runs those that are missing,
    under an advisory lock so concurrent first runs don't race."""
    enum_values = sql.SQL(", ").join(sql.Literal(v) for v in EVENT_TYPES)
    return [
        (names.table + "_event_type", sql.SQL("CREATE TYPE {} AS ENUM ({})").format(names.event_type, enum_values)),
        # A domain, not a CHECK: domain violations are soft errors, so COPY ON_ERROR ignore would
        # quarantine a NaN price instead of aborting the whole file (the load's own checks already keep
        # NaN and Infinity away from COPY; this stays as the database's own guard).
        (
            names.table + "_price",
            sql.SQL("CREATE DOMAIN {} AS numeric CHECK (VALUE NOT IN ('NaN', 'Infinity', '-Infinity'))").format(
                names.price
            ),
        ),
        (
            names.table,
            sql.SQL(
                "CREATE TABLE {} ({}, source_file text NOT NULL, source_line bigint NOT NULL)"
                " PARTITION BY LIST (source_file)"
            ).format(names.events, sql.SQL(", ").join(_column_defs(names, LOADED_COLUMNS))),
        ),
        (
            names.table + "_quarantine",
            sql.SQL(
                "CREATE TABLE {} (source_file text NOT NULL, source_line bigint NOT NULL,"
                " raw_line text NOT NULL, reason text NOT NULL, run_id text,"
                " quarantined_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (source_file, source_line))"
            ).format(names.quarantine),
        ),
        (
            names.table + "_ledger",
            sql.SQL(
                "CREATE TABLE {} (source_file text PRIMARY KEY, checksum text NOT NULL,"
                " size_bytes bigint, partition_name text NOT NULL, rows_read bigint NOT NULL,"
                " rows_loaded bigint NOT NULL,"
                " rows_quarantined bigint NOT NULL, run_id text, loaded_at timestamptz NOT NULL DEFAULT now(),"
                " load_seconds double precision, load_id bigint GENERATED BY DEFAULT AS IDENTITY)"
            ).format(names.ledger),
        ),
    ]


def create_db_schema(names: Names) -> sql.Composable:
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(names.schema))


# Ledger columns added after the first release: (name, type), in the order they were added. Adding
# load_id fills the existing entries with ids (they keep their partitions' old names).
LEDGER_ADDED_COLUMNS = (
    ("size_bytes", "bigint"),
    ("load_seconds", "double precision"),
    ("load_id", "bigint GENERATED BY DEFAULT AS IDENTITY"),
)


def add_ledger_column(names: Names, column: str) -> sql.Composable:
    """Ledgers written before `column` existed; run only when the column is missing, so that no
    DDL ever queues behind a running load's lock on the ledger."""
    sql_type = dict(LEDGER_ADDED_COLUMNS)[column]
    return sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
        names.ledger, sql.Identifier(column), sql.SQL(sql_type)
    )


def next_load_id(names: Names) -> sql.Composable:
    """A number no other load of this target ever had: the ledger's identity sequence (not
    transactional, so a rolled-back load's number is never drawn again)."""
    return sql.SQL("SELECT nextval(pg_get_serial_sequence({}, 'load_id'))").format(
        sql.Literal(f'"{names.schema}"."{names.table}_ledger"')
    )


def schema_objects(names: Names) -> sql.Composable:
    """What already holds the names a target owns: (namespace, name, kind, details).

    kind is the relkind of a relation ('p' partitioned, 'r' table, ...) or the typtype of a type
    ('c' a relation's row type, 'e' enum, 'd' domain); details are a relation's columns (and, for a
    partitioned table, its partition key), an enum's labels or a domain's base type.
    """
    return sql.SQL(
        "SELECT 'relation', c.relname, c.relkind::text,"
        " array(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0"
        " AND NOT a.attisdropped ORDER BY a.attnum)"
        " || coalesce((SELECT array['partition by ' || pg_get_partkeydef(c.oid)] FROM pg_partitioned_table p"
        " WHERE p.partrelid = c.oid), '{{}}')"
        " FROM pg_class c WHERE c.relnamespace = {schema}::regnamespace AND c.relname = ANY(%(relations)s)"
        " UNION ALL"
        " SELECT 'type', t.typname, t.typtype::text, CASE t.typtype"
        " WHEN 'e' THEN array(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid"
        " ORDER BY e.enumsortorder)"
        " WHEN 'd' THEN array[format_type(t.typbasetype, NULL)]"
        " WHEN 'c' THEN array[(SELECT r.relname::text FROM pg_class r WHERE r.oid = t.typrelid)]"
        " ELSE array[]::text[] END"
        " FROM pg_type t WHERE t.typnamespace = {schema}::regnamespace AND t.typname = ANY(%(types)s)"
    ).format(schema=sql.Literal(names.schema))


def schema_exists(names: Names) -> sql.Composable:
    return sql.SQL("SELECT to_regnamespace({}) IS NOT NULL").format(sql.Literal(names.schema))


def ledger_entry(names: Names) -> sql.Composable:
    return sql.SQL(
        "SELECT checksum, size_bytes, rows_read, partition_name, rows_loaded, rows_quarantined FROM {}"
        " WHERE source_file = %s"
    ).format(names.ledger)


def create_leaf(
    names: Names, leaf: str, source_file: str, first_line: int, end_line: int | None, sequence: str | None
) -> list[sql.Composable]:
    """A typed table for one segment of a file; it becomes a partition of the file's partition.

    source_file is a constant default with a matching CHECK, and source_line carries a CHECK
    for the segment's range, so neither ATTACH needs a validation scan. With `sequence`,
    source_line is drawn from it (fast path: COPY does not know line numbers); rows that COPY
    skips still draw a number, so the numbers stay equal to line numbers.
    """
    leaf_id = sql.Identifier(names.schema, leaf)
    literal = sql.Literal(source_file)
    line_range: sql.Composable = sql.SQL("source_line >= {}").format(sql.Literal(first_line))
    if end_line is not None:
        line_range = sql.SQL("{} AND source_line < {}").format(line_range, sql.Literal(end_line))
    line_default: sql.Composable = sql.SQL("")
    statements: list[sql.Composable] = []
    if sequence:
        seq_id = sql.Identifier(names.schema, sequence)
        # only this transaction draws from it, so a cached sequence still gives contiguous numbers
        statements.append(sql.SQL("CREATE SEQUENCE {} START {} CACHE 10000").format(seq_id, sql.Literal(first_line)))
        line_default = sql.SQL(" DEFAULT nextval({})").format(sql.Literal(f"{names.schema}.{sequence}"))
    statements.append(
        sql.SQL(
            "CREATE TABLE {} ({}, source_file text NOT NULL DEFAULT {} CHECK (source_file = {}),"
            " source_line bigint NOT NULL{} CHECK ({}))"
        ).format(
            leaf_id, sql.SQL(", ").join(_column_defs(names, CSV_COLUMNS)), literal, literal, line_default, line_range
        )
    )
    if sequence:  # dropped with the table, whenever that happens
        statements.append(
            sql.SQL("ALTER SEQUENCE {} OWNED BY {}.source_line").format(sql.Identifier(names.schema, sequence), leaf_id)
        )
    return statements


def copy_raw(names: Names, leaf: str, file_columns: tuple[str, ...]) -> sql.Composable:
    """Fast path: the file's own bytes, columns in the file's order."""
    return sql.SQL("COPY {} ({}) FROM STDIN WITH {}").format(
        sql.Identifier(names.schema, leaf),
        sql.SQL(", ").join(map(sql.Identifier, file_columns)),
        COPY_OPTIONS,
    )


def copy_careful(names: Names, leaf: str, file_columns: tuple[str, ...]) -> sql.Composable:
    """Careful path: records re-serialized, columns in the file's order, then their source line."""
    return sql.SQL("COPY {} ({}, source_line) FROM STDIN WITH {}").format(
        sql.Identifier(names.schema, leaf),
        sql.SQL(", ").join(map(sql.Identifier, file_columns)),
        COPY_OPTIONS,
    )


def finish_leaf(names: Names, leaf: str, sequence: str | None) -> list[sql.Composable]:
    """DROP COLUMN only marks category_code dropped: no rewrite, whatever the size."""
    statements: list[sql.Composable] = [
        sql.SQL(
            "ALTER TABLE {} DROP COLUMN category_code, ALTER COLUMN source_file DROP DEFAULT,"
            " ALTER COLUMN source_line DROP DEFAULT"
        ).format(sql.Identifier(names.schema, leaf))
    ]
    if sequence:
        statements.append(sql.SQL("DROP SEQUENCE {}").format(sql.Identifier(names.schema, sequence)))
    return statements


def drop_table(names: Names, table: str) -> sql.Composable:
    return sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(names.schema, table))


def count_rows(names: Names, table: str) -> sql.Composable:
    return sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(names.schema, table))


def unattached_segments(names: Names) -> sql.Composable:
    """Committed segment tables that are not attached (parameter: the segment prefix). Names only: no
    catalog function runs on them here, since another load may drop one of them meanwhile."""
    return sql.SQL(
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = {}::regnamespace AND c.relkind = 'r'"
        " AND NOT c.relispartition AND starts_with(c.relname, %s)"
    ).format(sql.Literal(names.schema))


def orphan_of_file(names: Names) -> sql.Composable:
    """One row when the segment table (locked by the caller) is unattached and holds this file's rows:
    its own CHECK constraint, as the server prints it, says so. Parameters from own_file_check."""
    return sql.SQL(
        "SELECT FROM pg_class c WHERE c.oid = to_regclass(%(table)s) AND NOT c.relispartition"
        " AND EXISTS (SELECT FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'c'"
        " AND pg_get_constraintdef(k.oid) = CASE current_setting('standard_conforming_strings')"
        " WHEN 'on' THEN %(check_on)s ELSE %(check_off)s END)"
    )


def own_file_check(names: Names, table: str, source_file: str) -> dict[str, str]:
    """orphan_of_file's parameters: the server prints create_leaf's `source_file = <file>` constraint
    with quotes doubled, and backslashes too when standard_conforming_strings is off."""

    def printed(value: str) -> str:
        return "CHECK ((source_file = '" + value.replace("'", "''") + "'::text))"

    return {
        "table": f'"{names.schema}"."{table}"',
        "check_on": printed(source_file),
        "check_off": printed(source_file.replace("\\", "\\\\")),
    }


def savepoint(name: str) -> sql.Composable:
    return sql.SQL("SAVEPOINT {}").format(sql.Identifier(name))


def release_savepoint(name: str) -> sql.Composable:
    return sql.SQL("RELEASE SAVEPOINT {}").format(sql.Identifier(name))


def rollback_to_savepoint(name: str) -> sql.Composable:
    return sql.SQL("ROLLBACK TO SAVEPOINT {}").format(sql.Identifier(name))


def lock_table_nowait(names: Names, table: str) -> sql.Composable:
    """Fails at once (55P03) when any other transaction holds any lock on it."""
    return sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE NOWAIT").format(sql.Identifier(names.schema, table))


def attached_partition(names: Names) -> sql.Composable:
    """The partition the ledger names, if it is attached to the events table (a name, not a value:
    partition bounds are never compared as printed literals)."""
    return sql.SQL(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = {}::regclass AND c.relname = %s"
    ).format(sql.Literal(f'"{names.schema}"."{names.table}"'))


def assemble_partition(
    names: Names, file_partition: str, leaves: list[tuple[str, int, int | None]]
) -> list[sql.Composable]:
    """The file's partition, made of its segment tables. Every ATTACH is proven by the leaves' CHECK
    constraints, so this costs milliseconds."""
    part_id = sql.Identifier(names.schema, file_partition)
    statements: list[sql.Composable] = [
        sql.SQL(
            "CREATE TABLE {} ({}, source_file text NOT NULL, source_line bigint NOT NULL)"
            " PARTITION BY RANGE (source_line)"
        ).format(part_id, sql.SQL(", ").join(_column_defs(names, LOADED_COLUMNS))),
    ]
    for leaf, first_line, end_line in leaves:
        upper = sql.SQL("MAXVALUE") if end_line is None else sql.Literal(end_line)
        statements.append(
            sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                part_id, sql.Identifier(names.schema, leaf), sql.Literal(first_line), upper
            )
        )
    return statements


def attach_file_partition(names: Names, file_partition: str, source_file: str) -> sql.Composable:
    return sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
        names.events, sql.Identifier(names.schema, file_partition), sql.Literal(source_file)
    )


def delete_ledger_entry(names: Names) -> sql.Composable:
    return sql.SQL("DELETE FROM {} WHERE source_file = %s").format(names.ledger)


def lock_timeout(seconds: int) -> sql.Composable:
    return sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{seconds}s"))


def delete_quarantine(names: Names) -> sql.Composable:
    return sql.SQL("DELETE FROM {} WHERE source_file = %s").format(names.quarantine)


def copy_quarantine(names: Names) -> sql.Composable:
    return sql.SQL("COPY {} (source_file, source_line, raw_line, reason, run_id) FROM STDIN WITH (FORMAT csv)").format(
        names.quarantine
    )


def upsert_ledger(names: Names) -> sql.Composable:
    return sql.SQL(
        "INSERT INTO {} (source_file, checksum, size_bytes, partition_name, rows_read, rows_loaded,"
        " rows_quarantined, run_id, load_seconds, load_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (source_file) DO UPDATE SET"
        " checksum = EXCLUDED.checksum, size_bytes = EXCLUDED.size_bytes, partition_name = EXCLUDED.partition_name,"
        " rows_read = EXCLUDED.rows_read, rows_loaded = EXCLUDED.rows_loaded,"
        " rows_quarantined = EXCLUDED.rows_quarantined, run_id = EXCLUDED.run_id, loaded_at = now(),"
        " load_seconds = EXCLUDED.load_seconds, load_id = EXCLUDED.load_id"
    ).format(names.ledger)


def deliver_notices() -> sql.Composable:
    """Any statement: COPY's notices reach the client with the next one."""
    return sql.SQL("SELECT 1")


# The server drops a load's connections once their client has been silent this long (30 s idle,
# then 3 probes 10 s apart): a load on a node that vanished (no FIN, no RST) would otherwise hold its
# file's lock, and its re-run would wait on it, for the kernel's default of two hours.
KEEPALIVE_IDLE_SECONDS, KEEPALIVE_INTERVAL_SECONDS, KEEPALIVE_COUNT = 30, 10, 3


def session_setup() -> sql.Composable:
    # Timestamps carry " UTC"; the session zone only affects display. The keepalives are
    # the server's, for this session's socket (ignored on a unix socket).
    return sql.SQL(
        "SET TIME ZONE 'UTC'; SET tcp_keepalives_idle = {}; SET tcp_keepalives_interval = {};"
        " SET tcp_keepalives_count = {}"
    ).format(sql.Literal(KEEPALIVE_IDLE_SECONDS), sql.Literal(KEEPALIVE_INTERVAL_SECONDS), sql.Literal(KEEPALIVE_COUNT))


# --- metrics (flows/metrics): read-only queries on the ledger and quarantine tables -------------


def metric_targets() -> sql.Composable:
    """The targets of a schema (%s): every <table> with its partitioned events table, its ledger and its
    quarantine table, readable by this role."""
    return sql.SQL(
        "SELECT left(l.relname, -length('_ledger')) FROM pg_class l"
        " WHERE l.relnamespace = to_regnamespace(%s) AND l.relkind = 'r' AND l.relname LIKE '%%\\_ledger'"
        " AND has_table_privilege(l.oid, 'SELECT')"
        " AND EXISTS (SELECT FROM pg_class t WHERE t.relnamespace = l.relnamespace AND t.relkind = 'p'"
        " AND t.relname = left(l.relname, -length('_ledger')))"
        " AND EXISTS (SELECT FROM pg_class t WHERE t.relnamespace = l.relnamespace AND t.relkind = 'r'"
        " AND t.relname = left(l.relname, -length('_ledger')) || '_quarantine'"
        " AND has_table_privilege(t.oid, 'SELECT'))"
        " ORDER BY 1"
    )


def ledger_rows(names: Names) -> sql.Composable:
    """Every ledger entry as JSON, so a ledger written before a column existed reads too."""
    return sql.SQL("SELECT to_jsonb(l) FROM {} l ORDER BY source_file").format(names.ledger)


# flows.transform.reason_class in SQL: the reason without its value (tests check both agree).
_REASON_CLASS = sql.SQL(
    "CASE WHEN starts_with({reason}, 'unparseable CSV') THEN 'unparseable CSV' ELSE"
    " regexp_replace(regexp_replace(regexp_replace({reason},"
    " '^(\\w+): \".*\" (is not |has no )', '\\1: value \\2'),"
    " '^(expected \\d+ fields), found \\d+$', '\\1'),"
    " '^(\\w+): field of \\d+ characters exceeds (\\d+)$', '\\1: field longer than \\2 characters') END"
)


def quarantine_by_reason_class(names: Names) -> sql.Composable:
    return sql.SQL("SELECT {}, count(*) FROM {} GROUP BY 1 ORDER BY 1").format(
        _REASON_CLASS.format(reason=sql.Identifier("reason")), names.quarantine
    )


def reason_classes() -> sql.Composable:
    """The class of each reason in %s (a list), in order: the SQL side of the reason_class check."""
    return sql.SQL("SELECT {} FROM unnest(%s::text[]) WITH ORDINALITY AS r(reason, n) ORDER BY n").format(
        _REASON_CLASS.format(reason=sql.Identifier("reason"))
    )


def database_size() -> sql.Composable:
    return sql.SQL("SELECT pg_database_size(current_database())")
