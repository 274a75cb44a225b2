"""The kaggle source through the real opendatasets and kaggle client code.

Kaggle's API itself is the only stand-in (tests/kaggle_standin.py; no internet here).
"""

import io
import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from flows.errors import ConfigError
from flows.schema import MONTH_FILES
from flows.settings import Settings
from flows.sources import download_kaggle, download_kaggle_file, plan_files
from helpers import CLI
from kaggle_standin import DOWNLOAD_PATH, KEY, LIST_PATH, ROWS, USER


def test_download_through_opendatasets_and_the_kaggle_client(kaggle_standin, kaggle_env, monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    cwd = Path.cwd()
    files = download_kaggle(Settings(_env_file=None))
    assert sorted(p.name for p in files) == sorted(MONTH_FILES)
    assert {p.name: p.read_bytes() for p in files} == kaggle_standin.files
    (request,) = kaggle_standin.requests
    assert request["body"] == {"ownerSlug": "mkechinov", "datasetSlug": "ecommerce-events-history-in-cosmetics-shop"}
    # the credentials file existed only for the call, and never in the data folder or cwd
    assert Path.cwd() == cwd and not (cwd / "kaggle.json").exists()
    assert not list((tmp_path / "data").rglob("kaggle.json"))
    # a second call reuses the completed download
    assert download_kaggle(Settings(_env_file=None)) == files and len(kaggle_standin.requests) == 1


def test_one_file_through_the_kaggle_client_receives_only_that_file(kaggle_standin, kaggle_env, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    settings = Settings(_env_file=None)
    path = download_kaggle_file(settings, "2019-Dec.csv")
    assert path.name == "2019-Dec.csv" and path.read_bytes() == kaggle_standin.files["2019-Dec.csv"]
    # one DownloadDataset call naming the file, redirected to that file alone
    api_call, download = kaggle_standin.requests
    assert api_call["path"] == DOWNLOAD_PATH and api_call["body"] == {
        "ownerSlug": "mkechinov", "datasetSlug": "ecommerce-events-history-in-cosmetics-shop",
        "fileName": "2019-Dec.csv"}
    with zipfile.ZipFile(io.BytesIO(download["served"])) as zf:
        assert zf.namelist() == ["2019-Dec.csv"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["2019-Dec.csv"]  # nothing else was fetched


def test_a_fanned_out_run_plans_its_files_from_the_kaggle_listing(kaggle_standin, kaggle_env, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    planned = plan_files("kaggle", Settings(_env_file=None), files=["2020-Feb.csv", "2019-Oct.csv"])
    assert [p.name for p in planned] == ["2020-Feb.csv", "2019-Oct.csv"]
    assert [p.name for p in plan_files("kaggle", Settings(_env_file=None))] == list(MONTH_FILES)
    assert [r["path"] for r in kaggle_standin.requests] == [LIST_PATH, LIST_PATH]  # listed, nothing downloaded
    with pytest.raises(ConfigError, match="2021-Mar.csv, which the source does not have"):
        plan_files("kaggle", Settings(_env_file=None), files=["2021-Mar.csv"])


def test_missing_credentials_fail_at_once_without_prompting(kaggle_env, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    with pytest.raises(ConfigError, match="needs KAGGLE_USERNAME"):
        download_kaggle(Settings(_env_file=None))


def test_cli_kaggle_run_loads_rows_and_never_shows_the_key(kaggle_standin, kaggle_env, prefect_server, data_db):
    env = {**os.environ, **prefect_server.env, "KAGGLE_USERNAME": USER, "KAGGLE_KEY": KEY}
    done = subprocess.run([CLI, "run", "--source", "kaggle", "--database-url", data_db, "--json"],
                          capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows_loaded"] == len(MONTH_FILES) * ROWS
    assert KEY not in done.stdout + done.stderr


def test_cli_without_credentials_exits_2_even_with_a_terminal(kaggle_env, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env["DATABASE_URL"] = "postgresql://u@127.0.0.1:1/d"
    # `script` gives the process a real TTY, where a prompt would otherwise wait for input
    done = subprocess.run(["script", "-qec", f"{CLI} run --source kaggle", "/dev/null"],
                          capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stdout
    assert "needs KAGGLE_USERNAME and KAGGLE_KEY" in done.stdout
