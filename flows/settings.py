"""Typed settings from the environment and an optional `.env` file (pydantic-settings)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from dotenv import dotenv_values
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flows.errors import ConfigError
from flows.identifiers import check_identifier, check_schema_name

KAGGLE_DATASET_URL = "https://www.kaggle.com/datasets/mkechinov/ecommerce-events-history-in-cosmetics-shop"


DEFAULT_COPY_PARALLELISM = 2


def copy_segments_for(cores: int) -> int:
    """COPY connections per file for a database server with `cores` cores: one more than its cores,
    so that a backend waiting for its client's next chunk leaves no core idle (measured in make bench)."""
    return max(1, cores) + 1


MIN_ALERT_SECONDS = 10  # the shortest wait Prefect's proactive triggers watch for


class AlertSettings(BaseModel):
    """The alerts group of the settings: what `ecommerce-etl deploy` registers (flows/alerts.py)."""

    enabled: bool | None = None  # None: on when a webhook is configured
    webhook_url: SecretStr | None = None
    pending_minutes: float = 15
    running_minutes: float = 240
    crashed_minutes: float = 5
    quarantine_ratio: float | None = None

    @property
    def active(self) -> bool:
        return self.enabled if self.enabled is not None else self.webhook

    @property
    def webhook(self) -> bool:
        return bool(self.url)

    @property
    def url(self) -> str:
        """The webhook URL ("" when none is configured)."""
        return self.webhook_url.get_secret_value().strip() if self.webhook_url else ""


class RecoverySettings(BaseModel):
    """The recovery group of the settings: bounded re-runs of crashed runs and riding out a Prefect API
    outage (flows/recovery.py). The bounds and defaults are Settings' fields'."""

    file_retries: int
    pipeline_retries: int
    # first delay before a re-run; doubled for each further one, at most retry_max_delay_seconds
    retry_delay_seconds: float
    retry_max_delay_seconds: float
    # how long the pipeline run's wait rides out an unreachable or failing Prefect API
    api_outage_seconds: float
    # `recover`: crashed pipeline runs older than this are left alone (runs that crashed before the
    # recovery existed, or while it was down longer than that, are never re-run by surprise)
    max_age_minutes: float
    poll_seconds: float
    heartbeat_file: Path | None = None


def _env(variable: str, default: Any, description: str, **constraints: Any) -> Any:
    """A setting read from `variable` (the environment or .env), described for the README's table."""
    return Field(default, validation_alias=variable, description=description, **constraints)


class Settings(BaseSettings):
    """Every setting, from the environment and an optional `.env` file; `settings_table()` documents them."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: SecretStr | None = _env(
        "DATABASE_URL", None, "`postgresql://user:password@host:5432/db`; non-Postgres URLs are refused"
    )
    # libpq's own variables: what the Helm chart's Jobs set (the password from a Secret)
    pghost: str | None = _env("PGHOST", None, "the database host, used when `DATABASE_URL` is unset (the chart's Jobs)")
    pgport: int = _env("PGPORT", 5432, "the database port (with `PGHOST`)", ge=1, le=65535)
    pgdatabase: str = _env("PGDATABASE", "ecommerce", "the database (with `PGHOST`)")
    pguser: str = _env("PGUSER", "etl", "the database user (with `PGHOST`)")
    pgpassword: SecretStr | None = _env("PGPASSWORD", None, "the database password (with `PGHOST`)")
    pgpassword_file: Path | None = _env(
        "PGPASSWORD_FILE", None, "a file holding `PGPASSWORD` (the chart mounts its Secret so); the variable wins"
    )

    table: str = _env("ETL_TABLE", "ecommerce_events", "the target table; a plain lower-case identifier")
    db_schema: str = _env("ETL_SCHEMA", "public", "the target schema; a plain lower-case identifier, not `pg_*`")
    data_dir: Path = _env("ETL_DATA_DIR", Path("data"), "downloads and the generated sample")
    local_dir: Path = _env(
        "ETL_LOCAL_DIR",
        Path(".data"),
        "`make run`'s local state: the embedded PostgreSQL and the local Prefect server's pid, log and home",
    )
    local_db_dir_override: Path | None = _env(
        "ETL_LOCAL_DB_DIR",
        None,
        "the embedded PostgreSQL used when no database is configured (and for the local Prefect server's "
        "metadata); default `$ETL_LOCAL_DIR/postgres`",
    )
    prefect_port: int = _env(
        "ETL_PREFECT_PORT",
        4200,
        "port of the local Prefect server and UI on 127.0.0.1 (used when `PREFECT_API_URL` is not set)",
        ge=1,
        le=65535,
    )
    sample_rows_per_file: int = _env("ETL_SAMPLE_ROWS_PER_FILE", 20_000, "sample size per monthly file", ge=1)
    copy_parallelism: int | None = _env(
        "ETL_COPY_PARALLELISM",
        None,
        "COPY connections (segments) per file; unset: the database server's cores + 1 (`make run` counts the "
        "embedded server's; the chart derives it from `postgresql.resources.limits.cpu`: "
        f"`flowRun.copyParallelism`), or {DEFAULT_COPY_PARALLELISM} for a configured database whose cores are unknown",
        ge=1,
        le=16,
    )
    max_parallel_files: int = _env(
        "ETL_MAX_PARALLEL_FILES",
        3,
        "files loaded at once by one run (in-process subflows); the chart sets it from "
        "`flowRun.maxParallelFiles`, which is also the `load-file` deployment's concurrency limit",
        ge=1,
        le=64,
    )
    file_deployment: str | None = _env(
        "ETL_FILE_DEPLOYMENT",
        None,
        "`<flow>/<deployment>` of the load-file deployment (the chart sets `load-file/load-file`): a `sample`, "
        "`url` or `kaggle` run then starts one flow run of it per file, each its own Job fetching only its own "
        "file; unset = files load in-process. `local` runs always load in-process (the folder exists only "
        "where the run is)",
        pattern=r"^[^/]+/[^/]+$",
    )

    kaggle_dataset: str = _env(
        "ETL_KAGGLE_DATASET",
        KAGGLE_DATASET_URL,
        "the Kaggle dataset (URL or owner/dataset id, read as opendatasets reads it)",
    )
    kaggle_username: SecretStr | None = _env(
        "KAGGLE_USERNAME", None, "required by `--source kaggle`; never prompted for, never logged"
    )
    kaggle_key: SecretStr | None = _env("KAGGLE_KEY", None, "required by `--source kaggle`; never logged")
    kaggle_username_file: Path | None = _env(
        "KAGGLE_USERNAME_FILE", None, "a file holding `KAGGLE_USERNAME` (optional: may be absent)"
    )
    kaggle_key_file: Path | None = _env(
        "KAGGLE_KEY_FILE", None, "a file holding `KAGGLE_KEY` (optional: may be absent)"
    )

    # the alerts group (`alerts`): the automations `ecommerce-etl deploy` registers, and the quarantine event
    alerts_enabled: bool | None = _env(
        "ETL_ALERTS_ENABLED", None, "register the alert automations; unset: only when a webhook is configured"
    )
    alert_webhook_url: SecretStr | None = _env(
        "ETL_ALERT_WEBHOOK_URL", None, "where the alerts post (http(s)); kept in a Prefect block's secret values"
    )
    alert_webhook_url_file: Path | None = _env(
        "ETL_ALERT_WEBHOOK_URL_FILE", None, "a file holding `ETL_ALERT_WEBHOOK_URL` (the chart mounts its Secret so)"
    )
    alert_pending_minutes: float = _env(
        "ETL_ALERT_PENDING_MINUTES", 15, "alert when a run stays Late or Pending this long (0: off)", ge=0
    )
    alert_running_minutes: float = _env(
        "ETL_ALERT_RUNNING_MINUTES", 240, "alert when a run stays Running this long (0: off)", ge=0
    )
    alert_crashed_minutes: float = _env(
        "ETL_ALERT_CRASHED_MINUTES",
        5,
        "alert when a pipeline run stays Crashed this long: nothing re-ran it (0: off)",
        ge=0,
    )
    alert_quarantine_ratio: float | None = _env(
        "ETL_ALERT_QUARANTINE_RATIO",
        None,
        "a loaded file whose quarantined share is above this (0-1) emits `ecommerce.file.quarantine-high`",
        ge=0,
        le=1,
    )

    # the recovery group (`recovery`): bounded re-runs of crashed runs (flows/recovery.py)
    file_retries: int = _env(
        "ETL_FILE_RETRIES",
        2,
        "times a crashed `load-file` run is run again (the same flow run) by the pipeline run waiting for it; "
        "then the file fails (the chart: `flowRun.fileRetries`)",
        ge=0,
        le=10,
    )
    pipeline_retries: int = _env(
        "ETL_PIPELINE_RETRIES",
        1,
        "times `ecommerce-etl recover` runs a crashed pipeline run again (the same flow run); then it is marked "
        "Failed (the chart: `flowRun.pipelineRetries`)",
        ge=0,
        le=10,
    )
    retry_delay_seconds: float = _env(
        "ETL_RETRY_DELAY_SECONDS",
        10,
        "seconds before the first re-run of a crashed run, doubled for each further one (the chart: "
        "`flowRun.retryDelaySeconds`)",
        ge=0,
        le=3600,
    )
    retry_max_delay_seconds: float = _env(
        "ETL_RETRY_MAX_DELAY_SECONDS", 300, "the longest delay before a re-run of a crashed run", ge=0, le=3600
    )
    api_outage_seconds: float = _env(
        "ETL_API_OUTAGE_SECONDS",
        900,
        "seconds in a row the pipeline run's wait for its `load-file` runs rides out an unreachable or failing "
        "(5xx) Prefect API before it fails",
        ge=0,
        le=86400,
    )
    recovery_max_age_minutes: float = _env(
        "ETL_RECOVERY_MAX_AGE_MINUTES",
        60,
        "`ecommerce-etl recover` leaves crashed pipeline runs older than this alone (never re-runs an old crash "
        "by surprise)",
        gt=0,
    )
    recovery_poll_seconds: float = _env(
        "ETL_RECOVERY_POLL_SECONDS", 10, "seconds between two passes of `ecommerce-etl recover`", gt=0
    )
    recovery_heartbeat_file: Path | None = _env(
        "ETL_RECOVERY_HEARTBEAT_FILE",
        None,
        "a file `ecommerce-etl recover` touches on every pass (the chart's liveness probe reads its age)",
    )

    @field_validator("file_deployment", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return value or None

    @field_validator("alert_pending_minutes", "alert_running_minutes", "alert_crashed_minutes")
    @classmethod
    def _watchable(cls, minutes: float) -> float:
        if 0 < minutes * 60 < MIN_ALERT_SECONDS:
            raise ValueError(
                f"{minutes:g} minutes is below {MIN_ALERT_SECONDS} seconds, the shortest wait Prefect can watch "
                "for: use 0.17 or more (0 switches this alert off)"
            )
        return minutes

    @model_validator(mode="after")
    def _read_secret_files(self) -> Settings:
        """Secrets as files (what the chart mounts from its Secrets): <VARIABLE>_FILE names a file holding
        the value, so it never enters the environment; the variable itself wins."""
        # (field, its file, the variable, whether the file may be absent: the Kaggle Secret is optional)
        for field, path, variable, optional in (
            ("pgpassword", self.pgpassword_file, "PGPASSWORD_FILE", False),
            ("kaggle_username", self.kaggle_username_file, "KAGGLE_USERNAME_FILE", True),
            ("kaggle_key", self.kaggle_key_file, "KAGGLE_KEY_FILE", True),
            ("alert_webhook_url", self.alert_webhook_url_file, "ETL_ALERT_WEBHOOK_URL_FILE", False),
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
        if self.alerts.webhook and not self.alerts.url.startswith(("http://", "https://")):
            raise ConfigError(
                "ETL_ALERT_WEBHOOK_URL (or the file ETL_ALERT_WEBHOOK_URL_FILE) must hold an http(s):// URL"
            )
        return self

    @property
    def alerts(self) -> AlertSettings:
        return AlertSettings(
            enabled=self.alerts_enabled,
            webhook_url=self.alert_webhook_url,
            pending_minutes=self.alert_pending_minutes,
            running_minutes=self.alert_running_minutes,
            crashed_minutes=self.alert_crashed_minutes,
            quarantine_ratio=self.alert_quarantine_ratio,
        )

    @property
    def recovery(self) -> RecoverySettings:
        return RecoverySettings(
            file_retries=self.file_retries,
            pipeline_retries=self.pipeline_retries,
            retry_delay_seconds=self.retry_delay_seconds,
            retry_max_delay_seconds=self.retry_max_delay_seconds,
            api_outage_seconds=self.api_outage_seconds,
            max_age_minutes=self.recovery_max_age_minutes,
            poll_seconds=self.recovery_poll_seconds,
            heartbeat_file=self.recovery_heartbeat_file,
        )

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
        """Every secret these settings hold: the passwords, the Kaggle login, the webhook, DATABASE_URL's password."""
        held = (self.pgpassword, self.kaggle_key, self.kaggle_username, self.alert_webhook_url)
        values = [s.get_secret_value() for s in held if s]
        url = self.database_url.get_secret_value() if self.database_url else ""
        return Secrets.of(*values, url_password(url) if url else None)

    def redact(self, text: str) -> str:
        return self.secrets().redact(text)


def normalise_database_url(url: str, setting: str) -> str:
    """Accept postgres:// and postgresql[+driver]:// URLs and use psycopg2; refuse anything else,
    naming `setting` and never showing the URL (it may hold a password)."""
    from sqlalchemy.engine import make_url  # imported when used: `ecommerce-etl --help` stays quick
    from sqlalchemy.exc import ArgumentError

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
        raise ConfigError("invalid setting: " + "; ".join(_problem(e) for e in exc.errors())) from None


def _problem(error: Any) -> str:
    """One validation error, naming its variable; a secret's value is never shown."""
    cause = error.get("ctx", {}).get("error")
    if not error["loc"]:  # a model-wide check names its variable itself; its input is every setting
        return str(cause) if isinstance(cause, ConfigError) else error["msg"]
    variable = _ENV_NAMES.get(str(error["loc"][0]), str(error["loc"][0]))
    message = str(cause) if isinstance(cause, ValueError) else error["msg"]
    shown = "" if variable in _SECRET_VARIABLES else f" (got {error.get('input')!r})"
    return f"{variable}: {message}{shown}"


# field name -> its environment variable, for error messages
_ENV_NAMES = {name: str(f.validation_alias) for name, f in Settings.model_fields.items()}
_SECRET_VARIABLES = {_ENV_NAMES[name] for name, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}
_ENV_NAMES.update({v: v for v in list(_ENV_NAMES.values())})  # pydantic may report the alias itself
