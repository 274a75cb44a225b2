"""T1: pure logic of the validate/transform stage, the schema rules, settings and the sample."""

import io

import pandas as pd
import pytest

from flows.errors import ConfigError, FileRejected
from flows.sample import generate_month, write_sample
from flows.csv_spec import CSV_HEADER
from flows.identifiers import check_identifier, check_schema_name
from flows.settings import Secrets, Settings, get_settings, normalise_database_url, url_password
from flows.transform import (
    MAX_FIELD_CHARS,
    check_record,
    iter_records,
    parse_header,
    parse_skip_notice,
    printable,
    to_copy_line,
)

HEADER_LINE = (",".join(CSV_HEADER) + "\n").encode()
GOOD = ["2019-10-01 00:00:00 UTC", "view", "5773203", "1487580005134238553", "", "runail", "2.62",
        "463240011", "26dd6e6e-4dac-4778-8d2c-92e149dab885"]


def test_header_accepts_bom_crlf_and_reordered_columns():
    header = parse_header(b"\xef\xbb\xbf" + HEADER_LINE.replace(b"\n", b"\r\n"))
    assert header.columns == CSV_HEADER and header.canonical
    assert header.byte_length == len(HEADER_LINE) + 4
    reordered = list(reversed(CSV_HEADER))
    assert parse_header((",".join(reordered) + "\n").encode()).columns == tuple(reordered)


@pytest.mark.parametrize(
    "line, message",
    [
        (b"", "empty"),
        (b"a,b,c\n", "missing event_time"),
        (HEADER_LINE.replace(b"price", b"cost"), "missing price; unexpected 'cost'"),
        (HEADER_LINE.replace(b"\n", b",price\n"), "duplicated price"),
        (b"\xff\xfe" + HEADER_LINE, "not UTF-8"),
        # these used to escape as csv errors and abort the whole run
        (HEADER_LINE.replace(b"\n", b"\r") + b"2019-10-01 00:00:00 UTC,view\r", "carriage return"),
        (b"x" * 70_000 + HEADER_LINE, "longer than 65536 bytes"),
        (b'"event_time,' + HEADER_LINE, "not a CSV header"),
    ],
)
def test_header_rejections_say_what_is_wrong(line, message):
    with pytest.raises(FileRejected, match=message):
        parse_header(line)


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda f: f[:5], "expected 9 fields, found 5"),
        (lambda f: f + ["extra"], "expected 9 fields, found 10"),
        (lambda f: [f[0].removesuffix(" UTC"), *f[1:]], 'no " UTC" zone suffix'),
        (lambda f: [*f[:6], "", *f[7:]], "price: required value is empty"),
        (lambda f: [f[0], f[1], "", *f[3:]], "product_id: required value is empty"),
        (lambda f: [*f[:5], "a\x00b", *f[6:]], "brand: contains a NUL byte"),
        (lambda f: [*f[:5], b"\xff".decode("utf-8", "surrogateescape"), *f[6:]], "brand: contains bytes that are not UTF-8"),
        (lambda f: [*f[:5], "x" * (MAX_FIELD_CHARS + 1), *f[6:]], "brand: field of"),
    ],
)
def test_record_rejections(change, reason):
    header = parse_header(HEADER_LINE)
    assert check_record(GOOD, header) is None
    assert reason in check_record(change(list(GOOD)), header)


def test_optional_fields_may_be_empty_and_negative_price_is_kept():
    header = parse_header(HEADER_LINE)
    record = [*GOOD[:4], "", "", "-79.37", GOOD[7], ""]
    assert check_record(record, header) is None


def test_copy_line_quotes_every_value_and_leaves_empty_ones_bare():
    fields = [*GOOD[:4], "", 'a, "b"\r\n', *GOOD[6:8], ""]
    line = to_copy_line(fields, source_line=42)
    assert line == ('"2019-10-01 00:00:00 UTC","view","5773203","1487580005134238553",,"a, ""b""\r\n",'
                    '"2.62","463240011",,42\n')


def test_skip_notices_become_reasons():
    row = parse_skip_notice('NOTICE:  skipping row due to data type incompatibility at line 7 for column "user_session": "nope"\n')
    assert row.copy_line == 7 and row.reason == 'user_session: "nope" is not a uuid'
    row = parse_skip_notice('NOTICE:  skipping row due to data type incompatibility at line 3 for column "price": null input')
    assert row.reason == "price: required value is empty"
    assert parse_skip_notice("NOTICE:  2 rows were skipped due to data type incompatibility") is None


def test_printable_escapes_bytes_postgres_cannot_store():
    assert printable("plain") == "plain"
    assert printable("a\x00" + b"\xff".decode("utf-8", "surrogateescape")) == "a\\x00\\xff"


def test_records_keep_line_numbers_across_quoted_newlines_and_recover_after_a_stray_quote():
    data = (
        b'1,"two\nlines",3\n'
        b"\n"
        b'"unclosed,x,y\n'
        b"4,5,6\n"
        b"7,8,9"
    )
    records = list(iter_records(io.BytesIO(data), first_line=2))
    assert [(r[0], r[2], r[3] is not None) for r in records] == [
        (2, ["1", "two\nlines", "3"], False),
        (5, None, True),  # only the line with the stray quote is rejected...
        (6, ["4", "5", "6"], False),  # ...the lines after it are parsed again
        (7, ["7", "8", "9"], False),
    ]
    assert records[1][1] == '"unclosed,x,y'


@pytest.mark.parametrize("name", ["ecommerce_events", "_t1", "a" * 40])
def test_identifiers_allowed(name):
    assert check_identifier(name, "ETL_TABLE") == name


@pytest.mark.parametrize("name", ["", "Events", "x; DROP TABLE y", 'a"b', "1abc", "a" * 41, "ev-ents", "é"])
def test_identifiers_refused_with_the_setting_named(name):
    with pytest.raises(ConfigError, match="ETL_TABLE="):
        check_identifier(name, "ETL_TABLE")


def test_database_urls():
    assert normalise_database_url("postgres://u:p@h:5/d", "X") == "postgresql+psycopg2://u:p@h:5/d"
    assert normalise_database_url("postgresql+asyncpg://u@h/d", "X") == "postgresql+psycopg2://u@h/d"
    with pytest.raises(ConfigError, match="DATABASE_URL uses 'mysql'.*PostgreSQL only"):
        normalise_database_url("mysql://u:p@h/d", "DATABASE_URL")
    with pytest.raises(ConfigError, match="not a database URL"):
        normalise_database_url("nonsense", "DATABASE_URL")
    with pytest.raises(ConfigError, match="--database-url has a port that is not a number") as refused:
        normalise_database_url("postgresql://u:hunter2@h:abc/d", "--database-url")
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize("url, password, host", [
    ("postgresql://etl:Sup3r@S3cretTail@127.0.0.1:5432/db", "Sup3r@S3cretTail", "127.0.0.1"),  # "@" unencoded
    ("postgresql://etl:Sup3r%40S3cretTail@127.0.0.1:5432/db", "Sup3r@S3cretTail", "127.0.0.1"),  # encoded
    ("postgresql://etl:a:b/c@db/x?sslmode=require", "a:b/c", "db"),
    ("postgresql://etl@db/x", None, "db"),
])
def test_a_password_is_the_text_up_to_the_last_at_sign_before_the_host(url, password, host):
    from sqlalchemy.engine import make_url

    parsed = make_url(normalise_database_url(url, "DATABASE_URL"))
    assert (parsed.username, parsed.password, parsed.host) == ("etl", password, host)
    assert url_password(url) == password


def test_secrets_are_removed_by_value_whatever_they_hold():
    secrets = Secrets.of("Sup3r@S3cretTail", "p a/ss", None, "")
    text = "could not connect as etl:Sup3r%40S3cretTail, Sup3r@S3cretTail, p%20a%2Fss or p a/ss"
    assert secrets.redact(text) == "could not connect as etl:***, ***, *** or ***"


def test_secrets_of_the_environment_are_known_before_the_settings_are_read(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", "postgresql://etl:Sup3r@Tail@h:nonsense/db")
    monkeypatch.setenv("KAGGLE_KEY", "k-123456")
    monkeypatch.setenv("ETL_MAX_PARALLEL_FILES", "abc")  # the settings cannot be read at all
    secrets = Secrets.from_environment(str(tmp_path / "no.env"))
    assert secrets.redact("Sup3r@Tail k-123456") == "*** ***"


@pytest.mark.parametrize("name", ["pg_temp", "pg_catalog", "pg_x"])
def test_schemas_postgresql_keeps_for_itself_are_refused(name):
    with pytest.raises(ConfigError, match=f"ETL_SCHEMA='{name}' is reserved"):
        check_schema_name(name, "ETL_SCHEMA")
    assert check_identifier(name, "ETL_TABLE") == name  # a table may be called so


def test_pg_variables_build_the_url_and_secrets_are_redacted(monkeypatch):
    for k, v in {"PGHOST": "db", "PGUSER": "etl", "PGPASSWORD": "s3cr/t", "PGDATABASE": "ecommerce"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = Settings(_env_file=None)
    assert settings.resolved_database_url() == "postgresql+psycopg2://etl:s3cr%2Ft@db:5432/ecommerce"
    assert settings.redact("failed for etl:s3cr%2Ft and s3cr/t") == "failed for etl:*** and ***"


def test_password_file_is_read_and_redacted(monkeypatch, tmp_path):
    """PGPASSWORD_FILE (what the chart's flow-run Jobs get): the file's first line, never the env."""
    secret = tmp_path / "etl-password"
    secret.write_text("fr0m/f1le\n")
    for k, v in {"PGHOST": "db", "PGUSER": "etl", "PGPASSWORD_FILE": str(secret)}.items():
        monkeypatch.setenv(k, v)
    for k in ("DATABASE_URL", "PGPASSWORD"):
        monkeypatch.delenv(k, raising=False)
    settings = Settings(_env_file=None)
    assert settings.resolved_database_url() == "postgresql+psycopg2://etl:fr0m%2Ff1le@db:5432/ecommerce"
    assert settings.redact("login fr0m/f1le failed") == "login *** failed"
    monkeypatch.setenv("PGPASSWORD", "env-wins")  # libpq's own variable keeps precedence
    assert Settings(_env_file=None).pgpassword.get_secret_value() == "env-wins"
    monkeypatch.delenv("PGPASSWORD")
    monkeypatch.setenv("PGPASSWORD_FILE", str(tmp_path / "missing"))
    monkeypatch.setenv("KAGGLE_KEY", "kaggle-secret-never-shown")
    with pytest.raises(ConfigError, match="PGPASSWORD_FILE=.*missing: cannot read it") as refused:
        get_settings()
    assert "kaggle-secret-never-shown" not in str(refused.value)
    monkeypatch.delenv("KAGGLE_KEY")
    # The Kaggle Secret is optional (the sample needs none): an absent file is an unset value.
    monkeypatch.delenv("PGPASSWORD_FILE")
    (tmp_path / "username").write_text("someone\n")
    monkeypatch.setenv("KAGGLE_USERNAME_FILE", str(tmp_path / "username"))
    monkeypatch.setenv("KAGGLE_KEY_FILE", str(tmp_path / "no-key"))
    settings = Settings(_env_file=None)
    assert settings.kaggle_username.get_secret_value() == "someone" and settings.kaggle_key is None


def test_sample_is_deterministic_and_realistic(tmp_path):
    a = write_sample(tmp_path / "a", rows_per_file=4000)
    b = write_sample(tmp_path / "b", rows_per_file=4000)
    assert [p.name for p in a] == ["2019-Oct.csv", "2019-Nov.csv", "2019-Dec.csv", "2020-Jan.csv", "2020-Feb.csv"]
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    first = a[0].read_text().splitlines()
    assert first[0] == ",".join(CSV_HEADER)
    assert first[1].startswith("2019-10-") and first[1].split(",")[0].endswith(" UTC")

    frame = generate_month("2019-Oct.csv", 100_000, seed=7)
    shares = frame.event_type.value_counts(normalize=True)
    assert shares["view"] == pytest.approx(0.467, abs=0.01)
    assert shares["cart"] == pytest.approx(0.279, abs=0.01)
    assert shares["remove_from_cart"] == pytest.approx(0.192, abs=0.01)
    assert shares["purchase"] == pytest.approx(0.062, abs=0.005)
    assert frame.brand.isna().mean() == pytest.approx(0.42, abs=0.01)
    assert frame.category_code.isna().mean() == pytest.approx(0.98, abs=0.005)
    assert 0 < frame.user_session.isna().mean() < 0.001
    assert frame.duplicated().mean() == pytest.approx(0.05, abs=0.002)
    assert (frame.price <= 0).sum() > 0
    assert frame.category_id.astype(str).str.len().eq(19).all()
    times = pd.to_datetime(frame.event_time.str.removesuffix(" UTC"))
    assert times.is_monotonic_increasing and times.dt.month.eq(10).all()


@pytest.mark.parametrize("files, found", [([], "it is empty"), (["2019-Oct.CSV"], "it holds 2019-Oct.CSV")])
def test_an_empty_selection_is_a_config_error_naming_what_was_looked_for(tmp_path, files, found):
    from flows.sources.local import csv_files

    for name in files:
        (tmp_path / name).write_text("x")
    with pytest.raises(ConfigError, match=rf"--path {tmp_path}: no file to load, looked for \*\.csv .*; {found}"):
        csv_files(tmp_path)


FAST = (b"2019-10-01 00:00:11 UTC,view,5198631,2079068294815440474,,,6.2,285067975,"
        b"08bc8129-47d2-4310-bae8-f7f371752917\n")


@pytest.mark.parametrize("change, lines", [
    (lambda b: b, 1),
    (lambda b: b.replace(b"\n", b"\r\n"), 1),
    (lambda b: b[:-1], 1),  # the file's last line, without its LF
    (lambda b: b * 3, 3),
    (lambda b: b.replace(b"5198631", b"-5"), 1),
    (lambda b: b.replace(b",6.2,", b",-6.25,"), 1),
    (lambda b: b.replace(b"08bc8129-47d2-4310-bae8-f7f371752917", b"08BC8129-47D2-4310-BAE8-F7F371752917"), 1),
    (lambda b: b.replace(b"08bc8129-47d2-4310-bae8-f7f371752917", b""), 1),
    # the right layout, a value COPY itself refuses (quarantined on the fast path with the same reason)
    (lambda b: b.replace(b"view", b"refund"), 1),
    (lambda b: b.replace(b"2019-10-01", b"2019-02-30"), 1),
    # what only the careful path may read
    (lambda b: b.replace(b"5198631", b"0x10"), None),
    (lambda b: b.replace(b"5198631", b"1_000"), None),
    (lambda b: b.replace(b"5198631", b"-"), None),
    (lambda b: b.replace(b"00:00:11", b"24:00:00"), None),
    (lambda b: b.replace(b"00:00:11", b"00:00:60"), None),
    (lambda b: b.replace(b"2019-10-01 00:00:11 UTC", b"today UTC"), None),
    (lambda b: b.replace(b",6.2,", b",.5,"), None),
    (lambda b: b.replace(b",6.2,", b",5.,"), None),
    (lambda b: b.replace(b",6.2,", b",6e2,"), None),
    (lambda b: b.replace(b",6.2,", b",123456789012345678901,"), None),
    (lambda b: b.replace(b"08bc8129-47d2-4310-bae8-f7f371752917", b"08bc812947d24310bae8f7f371752917"), None),
    (lambda b: b.replace(b",view,", b",view,x,"), None),
    (lambda b: b.replace(b"view", b'"view"'), None),
    (lambda b: b.replace(b"view", b"vi\rew"), None),
    (lambda b: b + b"\n" + b, None),  # a blank line
    (lambda b: b.replace(b"view", b""), None),
    (lambda b: b.replace(b",,,", b",x UTC,,"), 1),  # " UTC" elsewhere is just text
])
def test_the_fast_path_takes_only_lines_copy_reads_as_the_specification_says(change, lines):
    from fastcheck_reference import FastLineCheck

    from flows.transform import fast_lines

    assert fast_lines(change(FAST)) == lines
    assert FastLineCheck().lines(change(FAST)) == lines
