"""Typed settings from the environment and an optional `.env` file (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from flows.errors import ConfigError
from flows.schema import check_identifier

KAGGLE_DATASET_URL = "https://www.kaggle.com/datasets/mkechinov/ecommerce-events-history-in-cosmetics-shop"


DEFAULT_COPY_PARALLELISM = 2


def copy_segments_for(cores: int) -> int:
    """COPY connections per file for a database server with `cores` cores: one more than its cores,
    so that a backend waiting for its client's next chunk leaves no core idle (measured in make bench)."""
    return max(1, cores) + 1


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
    # COPY connections (segments) per file. Unset: sized to the embedded server's cores
    # (copy_segments_for), or DEFAULT_COPY_PARALLELISM for a server whose cores are not known. The
    # chart sets it from the PostgreSQL container's CPU limit (flowRun.copyParallelism).
    copy_parallelism: int | None = Field(None, ge=1, le=16, validation_alias="ETL_COPY_PARALLELISM")

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
        return check_identifier(self.db_schema, "ETL_SCHEMA"), check_identifier(self.table, "ETL_TABLE")


def normalise_database_url(url: str, setting: str) -> str:
    """Accept postgres:// and postgresql[+driver]:// URLs and use psycopg2; refuse anything else."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"{setting} is not a database URL: use postgresql://USER:PASSWORD@HOST:5432/DATABASE"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("postgresql", "postgres"):
        raise ConfigError(
            f"{setting} uses {backend!r}, but this pipeline loads into PostgreSQL only: "
            "use postgresql://USER:PASSWORD@HOST:5432/DATABASE"
        )
    return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def redact(text: str, settings: Settings | None = None) -> str:
    """Remove every configured secret from text bound for logs, artifacts or output."""
    settings = settings or get_settings()
    secrets = [
        s.get_secret_value()
        for s in (settings.pgpassword, settings.kaggle_key, settings.kaggle_username)
        if s and s.get_secret_value()
    ]
    if settings.database_url and settings.database_url.get_secret_value():
        try:
            password = make_url(settings.database_url.get_secret_value()).password
        except ArgumentError:
            password = None
        if password:
            secrets.append(password)
    secrets += [quote(s, safe="") for s in secrets]  # as they appear inside URLs
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


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
