"""T2: the command line's error paths against a real PostgreSQL and a real Prefect server: every invalid
setting or option gives exit 2 and exactly one JSON object naming it, and a password is kept out of
every message whatever characters it holds."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from flows.sample import write_sample
from helpers import CLI, cli, one_json_object

# (variable or option, its invalid value, what the message must say). A valid --database-url is given
# too (except where the database URL itself is under test), so a value let through would reach the
# real database and the real Prefect server and fail there instead, with another exit code.
INVALID = [
    ("ETL_MAX_PARALLEL_FILES", "abc", "ETL_MAX_PARALLEL_FILES: Input should be a valid integer"),
    ("ETL_MAX_PARALLEL_FILES", "0", "ETL_MAX_PARALLEL_FILES: Input should be greater than or equal to 1"),
    ("ETL_MAX_PARALLEL_FILES", "-1", "ETL_MAX_PARALLEL_FILES: Input should be greater than or equal to 1"),
    ("ETL_COPY_PARALLELISM", "abc", "ETL_COPY_PARALLELISM: Input should be a valid integer"),
    ("ETL_PREFECT_PORT", "70000", "ETL_PREFECT_PORT: Input should be less than or equal to 65535"),
    ("PGPORT", "xyz", "PGPORT: Input should be a valid integer"),
    ("ETL_SAMPLE_ROWS_PER_FILE", "0", "ETL_SAMPLE_ROWS_PER_FILE: Input should be greater than or equal to 1"),
    ("ETL_ALERT_QUARANTINE_RATIO", "2", "ETL_ALERT_QUARANTINE_RATIO: Input should be less than or equal to 1"),
    ("ETL_FILE_DEPLOYMENT", "no-slash", "ETL_FILE_DEPLOYMENT: String should match pattern"),
    ("ETL_TABLE", "x;drop", "ETL_TABLE='x;drop' is not a valid name"),
    ("ETL_SCHEMA", "pg_temp", "ETL_SCHEMA='pg_temp' is reserved"),
    ("DATABASE_URL", "postgresql://etl:pw@127.0.0.1:abc/ecommerce", "DATABASE_URL has a port that is not a number"),
    ("--database-url", "postgresql://etl:pw@127.0.0.1:abc/ecommerce", "--database-url has a port that is not a number"),
]


@pytest.mark.parametrize("setting, value, message", INVALID, ids=[f"{s}={v}" for s, v, _ in INVALID])
def test_every_invalid_setting_exits_2_with_one_json_object_naming_it(
    setting, value, message, prefect_server, data_db, tmp_path
):
    folder = tmp_path / "in"
    write_sample(folder, rows_per_file=10, files=("2019-Oct.csv",))
    env = {**prefect_server.env, "ETL_DATA_DIR": str(tmp_path / "data"), "ETL_LOCAL_DIR": str(tmp_path / ".data")}
    args = ["run", "--source", "local", "--path", str(folder), "--json"]
    if setting == "--database-url":
        args += [setting, value]
    else:
        env[setting] = value
        args += [] if setting == "DATABASE_URL" else ["--database-url", data_db]
    done = cli(*args, env=env, timeout=120)
    out = one_json_object(done)
    assert (done.returncode, out["status"], out["exit_code"]) == (2, "error", 2), done.stderr[-2000:]
    assert message in out["error"], out["error"]
    assert out["files"] == [] and out["rows_loaded"] == 0
    assert "Traceback" not in done.stderr and f"ecommerce-etl: error: {out['error']}" in done.stderr


def test_a_usage_error_with_json_is_one_json_object_too():
    done = cli("run", "--json", "--source", "nope", timeout=60)
    out = one_json_object(done)
    assert done.returncode == 2 and out["status"] == "error" and "invalid choice: 'nope'" in out["error"]


# A password with "@" in it, written into the URL as it is (not as %40): libpq and SQLAlchemy end the
# password at the first "@" and take the rest for the host name, which then appears in their errors.
AT_PASSWORD = "Sup3r@S3cret@Tail9"


@pytest.fixture
def at_role(postgres, data_db):
    """A login whose password holds "@", owning a database of its own."""
    postgres.run_sql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'etl_at') THEN "
                     f"CREATE ROLE etl_at LOGIN PASSWORD '{AT_PASSWORD}'; END IF; END $$")
    database = data_db.rsplit("/", 1)[1]
    postgres.run_sql(f'ALTER DATABASE "{database}" OWNER TO etl_at')
    return f"postgresql://etl_at:{{password}}@127.0.0.1:{postgres.port}/{database}"


def test_a_password_with_an_unencoded_at_sign_connects(at_role, prefect_server, tmp_path):
    folder = tmp_path / "in"
    write_sample(folder, rows_per_file=50, files=("2019-Oct.csv",))
    done = cli("run", "--source", "local", "--path", str(folder), "--json", "--database-url",
               at_role.format(password=AT_PASSWORD), env={**prefect_server.env, "ETL_DATA_DIR": str(tmp_path / "d")})
    assert done.returncode == 0, done.stderr[-3000:]
    assert one_json_object(done)["rows_loaded"] == 50
    assert not [part for part in AT_PASSWORD.split("@") if part in done.stdout + done.stderr]


@pytest.mark.parametrize("how", ["--database-url", "DATABASE_URL"])
def test_a_wrong_password_with_an_unencoded_at_sign_is_never_shown(how, at_role, prefect_server, tmp_path):
    wrong = "Wr0ng@Pa55word@Tail7"
    url = at_role.format(password=wrong)
    env = {**prefect_server.env, "ETL_DATA_DIR": str(tmp_path / "d")}
    args = ["run", "--source", "sample", "--json"]
    if how == "DATABASE_URL":
        env["DATABASE_URL"] = url
    else:
        args += [how, url]
    done = cli(*args, env=env, timeout=120)
    out = one_json_object(done)
    assert done.returncode == 2 and 'password authentication failed for user "etl_at"' in out["error"], out
    leaked = [part for part in wrong.split("@") if part in done.stdout + done.stderr]
    assert not leaked, f"{leaked} of the password shown: {out['error']}"


def test_psql_opens_the_configured_database_without_the_password_on_its_command_line(at_role):
    url = at_role.format(password=AT_PASSWORD)
    done = cli("psql", "--database-url", url, "-c", "select current_user, 'psql-ok'", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "etl_at" in done.stdout and "psql-ok" in done.stdout
    # the command replaces itself with psql: its command line is psql's, visible to every user of the machine
    slow = subprocess.Popen([CLI, "psql", "--database-url", url, "-c", "select pg_sleep(3)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while b"psql" not in Path(f"/proc/{slow.pid}/cmdline").read_bytes().split(b"\0")[0]:
            assert time.monotonic() < deadline and slow.poll() is None, slow.communicate()
            time.sleep(0.05)
        argv = Path(f"/proc/{slow.pid}/cmdline").read_bytes().decode()
    finally:
        slow.communicate(timeout=30)
    assert slow.returncode == 0 and "pg_sleep" in argv and AT_PASSWORD not in argv
