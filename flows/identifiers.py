"""Names that go into SQL (the target table and schema): plain lower-case identifiers only."""

from __future__ import annotations

import re

from flows.errors import ConfigError

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
