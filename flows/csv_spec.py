"""The CSV column spec: the dataset's files, its columns and their types, the known event types.

(The database schema, ETL_SCHEMA, is another thing: see flows/sql.py and flows/identifiers.py.)
"""

from __future__ import annotations

from dataclasses import dataclass

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
