"""`ecommerce-etl forget FILE`: remove one file's rows, quarantine rows and ledger entry, in one
transaction under the file's lock (a renamed or deleted file's rows stay until then: exactly-once is
keyed by file name)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flows.cli._app import EXIT_FAILED, EXIT_OK, Output
from flows.cli._params import database_url_option, option, table_option

HELP = (
    "remove a file's rows, quarantine rows and ledger entry (a renamed or deleted file's rows stay "
    "until then: exactly-once is keyed by file name)"
)


@dataclass(frozen=True)
class Params:
    file: str = option(help="the file's name as loaded (a path is fine: its last part is the name)")
    table: str | None = table_option()
    database_url: str | None = database_url_option()


def execute(params: Params, out: Output) -> int:
    import sqlalchemy as sa

    from flows.cli._targets import database
    from flows.load import forget_file
    from flows.settings import Secrets, get_settings, url_password
    from flows.sql import Names

    out.learn(Secrets.of(url_password(params.database_url or "")))
    settings = get_settings()
    out.learn(settings.secrets())
    schema, default_table = settings.checked_names()
    names = Names(schema, params.table or default_table, table_setting="--table" if params.table else "ETL_TABLE")
    engine = sa.create_engine(database(settings, params.database_url).settings.required_database_url())
    try:
        forgotten = forget_file(engine, names, Path(params.file).name)
    except sa.exc.ProgrammingError as exc:  # no ledger table: nothing was ever loaded into this target
        reason = " ".join(str(exc.orig).split())
        message = f"{names.schema}.{names.table} has no ledger to forget {params.file} from ({reason})"
        return out.fail(message, EXIT_FAILED)
    finally:
        engine.dispose()
    if not forgotten.found:
        return out.fail(
            f"{forgotten.file} is not in the ledger of {names.schema}.{names.table}: nothing to forget", EXIT_FAILED
        )
    print(
        f"forgot {forgotten.file}: {forgotten.rows_loaded} rows and {forgotten.rows_quarantined} quarantined rows "
        f"removed from {names.schema}.{names.table}, ledger entry deleted"
    )
    return EXIT_OK
