"""Typed settings from the environment and an optional `.env` file (pydantic-settings)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from dotenv import dotenv_values
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from flows.errors import ConfigError
from flows.schema import check_identifier, check_schema_name

KAGGLE_DATASET_URL = "https://www.kaggle.com/datasets/mkechinov/ecommerce-events-history-in-cosmetics-shop"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: SecretStr | None = Field(None, validation_alias="DATABASE_URL")
    # libpq's own variables: what the Helm chart's Jobs set (the password from a Secret).
    pghost: str | None = Field(None, validation_alias="PGHOST")
    pgport: int = Field(5432, validation_alias="PGPORT")
    pgdatabase: str = Field("ecommerce", validation_alias="PGDATABASE")
    pguser: str = Field("etl", validation_alias="PGUSER")
    pgpassword: SecretStr | None = Field(None, validation_alias="PGPASSWORD")

    table: str = Field("ecommerce_events", validation_alias="ETL_TABLE")
    db_schema: str = Field("public", validation_alias=AliasChoices("ETL_SCHEMA"))
    data_dir: Path = Field(Path("data"), validation_alias="ETL_DATA_DIR")
    # `make run`'s local state: the embedded PostgreSQL and the local Prefect server's pid, log and home
    local_dir: Path = Field(Path(".data"), validation_alias="ETL_LOCAL_DIR")
    local_db_dir_override: Path | None = Field(None, validation_alias="ETL_LOCAL_DB_DIR")
    # the local Prefect server's UI and API (127.0.0.1), started when PREFECT_API_URL is not set
    prefect_port: int = Field(4200, ge=1, le=65535, validation_alias="ETL_PREFECT_PORT")
    sample_rows_per_file: int = Field(20_000, ge=1, validation_alias="ETL_SAMPLE_ROWS_PER_FILE")
    # COPY connections per file; the database server needs that many free cores to gain
    copy_parallelism: int = Field(2, ge=1, le=16, validation_alias="ETL_COPY_PARALLELISM")

    # Files loaded at once by one run: in-process subflows (the CLI), or the Job count the chart's
    # load-file deployment concurrency limit allows (flowRun.maxParallelFiles, the same value).
    max_parallel_files: int = Field(3, ge=1, le=64, validation_alias="ETL_MAX_PARALLEL_FILES")
    # "<flow>/<deployment>" of the load-file deployment: set (by the chart), a run starts one
    # flow run of it per file, each its own Job; unset, the run loads its files in-process.
    file_deployment: str | None = Field(None, pattern=r"^[^/]+/[^/]+$", validation_alias="ETL_FILE_DEPLOYMENT")

    # A loaded file whose quarantined share is above this emits ecommerce.file.quarantine-high
    # (the chart's alerts.quarantineRatio); unset: no such event.
    alert_quarantine_ratio: float | None = Field(None, ge=0, le=1, validation_alias="ETL_ALERT_QUARANTINE_RATIO")

    kaggle_dataset: str = Field(KAGGLE_DATASET_URL, validation_alias="ETL_KAGGLE_DATASET")
    kaggle_username: SecretStr | None = Field(None, validation_alias="KAGGLE_USERNAME")
    kaggle_key: SecretStr | None = Field(None, validation_alias="KAGGLE_KEY")

    @field_validator("file_deployment", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return value or None

    # Secrets as files (what the chart mounts from its Secrets): <VARIABLE>_FILE names a file
    # holding the value, so it never enters the environment; the variable itself wins.
    pgpassword_file: Path | None = Field(None, validation_alias="PGPASSWORD_FILE")
    kaggle_username_file: Path | None = Field(None, validation_alias="KAGGLE_USERNAME_FILE")
    kaggle_key_file: Path | None = Field(None, validation_alias="KAGGLE_KEY_FILE")

    @model_validator(mode="after")
    def _read_secret_files(self) -> Settings:
        # (field, its file, the variable, whether the file may be absent: the Kaggle Secret is optional)
        for field, path, variable, optional in (
            ("pgpassword", self.pgpassword_file, "PGPASSWORD_FILE", False),
            ("kaggle_username", self.kaggle_username_file, "KAGGLE_USERNAME_FILE", True),
            ("kaggle_key", self.kaggle_key_file, "KAGGLE_KEY_FILE", True),
        ):
            if path is None or getattr(self, field):
                continue
            try:
                text = path.read_text()
            except FileNotFoundError:
                if optional:
                    continue
                raise ConfigError(f"{variable}={path}: cannot read it (no such file)") from None
            except OSError as exc:
                raise ConfigError(f"{variable}={path}: cannot read it ({exc.strerror})") from None
            setattr(self, field, SecretStr(text.rstrip("\r\n")))
        return self

    def resolved_database_url(self) -> str | None:
        """DATABASE_URL, else one built from PG* variables, else None (use the embedded server)."""
        if self.database_url and self.database_url.get_secret_value():
            return normalise_database_url(self.database_url.get_secret_value(), "DATABASE_URL")
        if self.pghost:
            password = self.pgpassword.get_secret_value() if self.pgpassword else ""
            auth = quote(self.pguser) + (":" + quote(password, safe="") if password else "")
            return f"postgresql+psycopg2://{auth}@{self.pghost}:{self.pgport}/{quote(self.pgdatabase)}"
        return None

    def required_database_url(self) -> str:
        """The resolved database URL; a ConfigError naming the settings when there is none."""
        url = self.resolved_database_url()
        if not url:
            raise ConfigError("no database configured: set DATABASE_URL or PGHOST/PGUSER/PGPASSWORD/PGDATABASE")
        return url

    @property
    def local_db_dir(self) -> Path:
        return self.local_db_dir_override or self.local_dir / "postgres"

    def checked_names(self) -> tuple[str, str]:
        return check_schema_name(self.db_schema, "ETL_SCHEMA"), check_identifier(self.table, "ETL_TABLE")

    def secrets(self) -> Secrets:
        """Every secret these settings hold: the passwords, the Kaggle login, DATABASE_URL's password."""
        values = [s.get_secret_value() for s in (self.pgpassword, self.kaggle_key, self.kaggle_username) if s]
        url = self.database_url.get_secret_value() if self.database_url else ""
        return Secrets.of(*values, url_password(url) if url else None)

    def redact(self, text: str) -> str:
        return self.secrets().redact(text)


def normalise_database_url(url: str, setting: str) -> str:
    """Accept postgres:// and postgresql[+driver]:// URLs and use psycopg2; refuse anything else,
    naming `setting` and never showing the URL (it may hold a password)."""
    try:
        parsed = make_url(_encoded_userinfo(url))
    except ArgumentError:
        raise ConfigError(
            f"{setting} is not a database URL: use postgresql://USER:PASSWORD@HOST:5432/DATABASE"
        ) from None
    except ValueError:  # SQLAlchemy parses the port with int()
        raise ConfigError(
            f"{setting} has a port that is not a number: use postgresql://USER:PASSWORD@HOST:5432/DATABASE"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("postgresql", "postgres"):
        raise ConfigError(
            f"{setting} uses {backend!r}, but this pipeline loads into PostgreSQL only: "
            "use postgresql://USER:PASSWORD@HOST:5432/DATABASE"
        )
    return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def _split_userinfo(url: str) -> tuple[str, str, str | None, str] | None:
    """(scheme://, user, password or None, the rest from the host on) of a URL with a user part.

    A password may hold an unencoded "@": the user part ends at the last "@" before the host, where
    libpq and SQLAlchemy would end it at the first one and take the password's tail for the host."""
    scheme, sep, rest = url.partition("://")
    authority_and_path, query_sep, query = rest.partition("?")
    userinfo, at, host_on = authority_and_path.rpartition("@")
    if not sep or not at:
        return None
    user, colon, password = userinfo.partition(":")
    return f"{scheme}://", unquote(user), unquote(password) if colon else None, host_on + query_sep + query


def _encoded_userinfo(url: str) -> str:
    """The URL with its user and password percent-encoded (each decoded first, so encoding is not doubled)."""
    parts = _split_userinfo(url)
    if parts is None:
        return url
    prefix, user, password, host_on = parts
    auth = quote(user, safe="") + ("" if password is None else ":" + quote(password, safe=""))
    return f"{prefix}{auth}@{host_on}"


def url_password(url: str) -> str | None:
    """The password of a database URL as its owner wrote it (decoded), or None."""
    parts = _split_userinfo(url)
    return parts[2] if parts else None


@dataclass(frozen=True)
class Secrets:
    """Secret values as configured, removed from any text bound for logs, artifacts or output: by
    value (whatever characters they hold), as they are and as they appear inside a URL."""

    values: frozenset[str] = frozenset()

    @classmethod
    def of(cls, *values: str | None) -> Secrets:
        return cls(frozenset(v for v in values if v))

    def __or__(self, other: Secrets) -> Secrets:
        return Secrets(self.values | other.values)

    def redact(self, text: str) -> str:
        forms = self.values | {quote(v, safe="") for v in self.values}
        for secret in sorted(forms, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    @classmethod
    def from_environment(cls, env_file: str = ".env") -> Secrets:
        """The secret variables' raw values (environment, then .env), for messages written before the
        settings could be read; never fails."""
        try:
            raw = {**dotenv_values(env_file), **os.environ}
        except (OSError, ValueError):
            raw = dict(os.environ)
        values = [raw.get(name) for name in sorted(_SECRET_VARIABLES)]
        return cls.of(*values, *(url_password(v) for v in values if v))


def get_settings() -> Settings:
    """The settings from the environment and .env; a bad value is a ConfigError naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            variable = _ENV_NAMES.get(field, field or "a setting")
            # a model-wide check (a *_FILE that cannot be read) names its variable itself; its input
            # is every setting, secrets included, so it is never shown
            secret = variable in _SECRET_VARIABLES or not error["loc"]
            shown = "" if secret else f" (got {error.get('input')!r})"
            problems.append(f"{variable}: {error['msg']}{shown}")
        raise ConfigError("invalid setting: " + "; ".join(problems)) from None


# field name -> its environment variable, for error messages
_ENV_NAMES = {
    name: str(f.validation_alias.choices[0] if isinstance(f.validation_alias, AliasChoices) else f.validation_alias)
    for name, f in Settings.model_fields.items()
}
_SECRET_VARIABLES = {_ENV_NAMES[name] for name, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}
_ENV_NAMES.update({v: v for v in list(_ENV_NAMES.values())})  # pydantic may report the alias itself
