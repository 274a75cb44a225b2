"""The dataset's shape: the one place that names the columns, their types and the known event types."""

from __future__ import annotations

import re
from dataclasses import dataclass

from flows.errors import ConfigError

MONTH_FILES = ("2019-Oct.csv", "2019-Nov.csv", "2019-Dec.csv", "2020-Jan.csv", "2020-Feb.csv")

EVENT_TYPES = ("view", "cart", "remove_from_cart", "purchase")


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str  # type in the loaded table; "{event_type}" and "{price}" are the table's own types (flows.sql)
    required: bool
    kept: bool = True  # False: read and checked, but not loaded (category_code)


# CSV columns in the order the dataset ships them.
CSV_COLUMNS: tuple[Column, ...] = (
    Column("event_time", "timestamptz", required=True),
    Column("event_type", "{event_type}", required=True),
    Column("product_id", "bigint", required=True),
    Column("category_id", "bigint", required=True),
    Column("category_code", "text", required=False, kept=False),
    Column("brand", "text", required=False),
    Column("price", "{price}", required=True),
    Column("user_id", "bigint", required=True),
    Column("user_session", "uuid", required=False),
)
CSV_HEADER: tuple[str, ...] = tuple(c.name for c in CSV_COLUMNS)
COLUMNS_BY_NAME = {c.name: c for c in CSV_COLUMNS}
LOADED_COLUMNS: tuple[Column, ...] = tuple(c for c in CSV_COLUMNS if c.kept)

# The dataset writes every timestamp as "YYYY-MM-DD HH:MM:SS UTC"; a value without an explicit
# zone would silently take the session's zone, so it is quarantined instead.
EVENT_TIME_SUFFIX = " UTC"

# 40 leaves room for the suffixes of the tables a table owns within Postgres's 63-byte names
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")


def check_identifier(value: str, setting: str) -> str:
    """Table and schema names go into SQL, so only plain lower-case identifiers are allowed."""
    if not _IDENTIFIER.fullmatch(value or ""):
        raise ConfigError(
            f"{setting}={value!r} is not a valid name: use 1-40 characters of a-z, 0-9 and _, "
            "starting with a letter or _ (for example ecommerce_events)."
        )
    return value


def check_schema_name(value: str, setting: str) -> str:
    """A schema name: a plain identifier, and not one PostgreSQL keeps for itself (pg_*)."""
    check_identifier(value, setting)
    if value.startswith("pg_"):
        raise ConfigError(
            f"{setting}={value!r} is reserved: PostgreSQL keeps schema names starting with pg_ (pg_catalog, "
            "pg_temp...) for itself; use another name (for example public)."
        )
    return value
