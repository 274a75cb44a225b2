"""The sources keep their files apart: one URL is one file, fetched by that file's own unit of work, so
a URL that fails fails only its file; two URLs of one file name are refused before anything downloads.
T2 through the CLI (a real PostgreSQL and Prefect server; the web server is a local one)."""

from __future__ import annotations

import gzip
import io
import json
import re
import zipfile

import pytest

from flows.contract import FileRequest, RunRequest
from flows.errors import ConfigError
from flows.sample import write_sample
from flows.csv_spec import MONTH_FILES
from flows.settings import Settings
from flows.sources import SOURCES, source_for
from flows.sources.url import download_folder
from helpers import cli, rows, serving


@pytest.fixture(scope="module")
def months(tmp_path_factory) -> dict[str, bytes]:
    """Each month's CSV, 40 rows (distinct bytes per month)."""
    folder = tmp_path_factory.mktemp("months")
    return {p.name: p.read_bytes() for p in write_sample(folder, rows_per_file=40)}


def _zip(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(name, data)
    return out.getvalue()


def _run(urls: list[str], data_db: str, prefect_server, tmp_path):
    args = ["run", "--source", "url", "--database-url", data_db, "--json"]
    for url in urls:
        args += ["--url", url]
    return cli(*args, env={**prefect_server.env, "ETL_DATA_DIR": str(tmp_path / "data")})


def test_a_url_that_fails_fails_only_its_file(months, prefect_server, data_db, tmp_path):
    routes = {
        "/a/2019-Oct.csv": months["2019-Oct.csv"],
        "/b/2019-Nov.csv.gz": gzip.compress(months["2019-Nov.csv"]),
        "/c/2019-Dec.csv": 404,
        "/d/2020-Jan.csv.gz": gzip.compress(months["2020-Jan.csv"])[:-40],  # truncated
        "/e/2020-Feb.csv.zip": _zip("2020-Feb.csv", months["2020-Feb.csv"]),
    }
    with serving(routes) as web:
        done = _run([web.url + path for path in routes], data_db, prefect_server, tmp_path)
    out = json.loads(done.stdout)
    assert done.returncode == 1 and out["status"] == "failed", done.stderr[-3000:]
    by_file = {f["file"]: f for f in out["files"]}
    assert list(by_file) == list(MONTH_FILES)  # every file reported, in the run's order
    assert {f: r["status"] for f, r in by_file.items()} == {
        "2019-Oct.csv": "loaded", "2019-Nov.csv": "loaded", "2019-Dec.csv": "failed", "2020-Jan.csv": "failed",
        "2020-Feb.csv": "loaded"}
    assert "HTTP 404" in by_file["2019-Dec.csv"]["error"]
    assert "corrupt or truncated gzip" in by_file["2020-Jan.csv"]["error"]
    assert sorted(web.requests) == sorted(routes)  # each URL asked for once
    loaded = dict(rows(data_db, "select source_file, count(*) from ecommerce_events group by 1"))
    assert loaded == {"2019-Oct.csv": 40, "2019-Nov.csv": 40, "2020-Feb.csv": 40}


def test_two_urls_of_one_file_name_are_refused_before_anything_downloads(months, prefect_server, data_db, tmp_path):
    routes = {"/x/2019-Oct.csv": months["2019-Oct.csv"], "/y/2019-Oct.csv.gz": gzip.compress(months["2019-Nov.csv"])}
    with serving(routes) as web:
        done = _run([web.url + path for path in routes], data_db, prefect_server, tmp_path)
    out = json.loads(done.stdout)
    assert done.returncode == 2 and out["status"] == "error", done.stderr[-3000:]
    assert f"{web.url}/x/2019-Oct.csv" in out["error"] and f"{web.url}/y/2019-Oct.csv.gz" in out["error"]
    assert "would both load as 2019-Oct.csv" in out["error"]
    assert web.requests == []  # refused before anything downloaded
    assert rows(data_db, "select count(*) from pg_tables where schemaname = 'public'") == [(0,)]


def test_each_url_downloads_to_a_place_of_its_own(tmp_path):
    places = {download_folder(tmp_path, f"http://h/{d}/2019-Oct.csv") for d in ("x", "y")}
    places.add(download_folder(tmp_path, "http://h/x/2019-Oct.csv?v=2"))
    assert len(places) == 3 and all(p.parent == tmp_path / "url" for p in places)


@pytest.mark.parametrize("request_values, message", [
    ({"source": "url", "url": "ftp://h/a.csv"}, "must be an http(s) URL"),
    ({"source": "url", "url": "https://h/bundle.zip"}, "each URL names one CSV file"),
    ({"source": "url"}, "--source url needs --url URL"),
    ({"source": "local"}, "--source local needs --path DIR"),
])
def test_each_source_checks_its_own_arguments(request_values, message, tmp_path):
    request = RunRequest(**request_values)
    with pytest.raises(ConfigError, match=re.escape(message)):
        source_for(request.source, Settings(_env_file=None, ETL_DATA_DIR=tmp_path)).check(request)


def test_every_source_plans_by_name_before_fetching(tmp_path):
    settings = Settings(_env_file=None, ETL_DATA_DIR=tmp_path / "data")
    folder = tmp_path / "in"
    write_sample(folder, rows_per_file=5, files=("2019-Nov.csv",))
    plans = {
        "sample": RunRequest(source="sample", rows_per_file=7, table="t"),
        "local": RunRequest(source="local", path=str(folder)),
        "url": RunRequest(source="url", url=("https://h/a/2019-Oct.csv.gz",)),
    }
    planned = {name: source_for(name, settings).plan(request, run_id="r1") for name, request in plans.items()}
    assert planned["sample"][0] == FileRequest(name="2019-Oct.csv", source="sample", rows_per_file=7, table="t",
                                               run_id="r1")
    assert planned["local"] == [FileRequest(name="2019-Nov.csv", source="local",
                                            location=str(folder / "2019-Nov.csv"), run_id="r1")]
    assert planned["url"] == [FileRequest(name="2019-Oct.csv", source="url", location="https://h/a/2019-Oct.csv.gz",
                                          run_id="r1")]
    assert not (tmp_path / "data").exists()  # nothing fetched
    sample = source_for("sample", settings).fetch(planned["sample"][1])
    assert (sample.name, len(sample.read_text().splitlines())) == ("2019-Nov.csv", 8)
    assert set(SOURCES) == {"sample", "local", "url", "kaggle"}


def test_flow_parameters_are_json_types_without_the_defaults():
    assert RunRequest(source="sample").flow_parameters() == {}
    assert RunRequest(source="url", url="https://h/a.csv", files=("a.csv",), rows_per_file=None).flow_parameters() == {
        "source": "url",
        "url": ["https://h/a.csv"],
        "files": ["a.csv"],
    }
    assert RunRequest(source="kaggle", files=(), table="t").flow_parameters() == {
        "source": "kaggle",
        "files": [],
        "table": "t",
    }
