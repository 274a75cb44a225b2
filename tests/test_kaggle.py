"""The kaggle source through the real kaggle client code (the one opendatasets calls).

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
from flows.csv_spec import MONTH_FILES
from flows.settings import Settings
from flows.contract import FileRequest, RunRequest
from flows.sources.kaggle import KaggleSource
from helpers import CLI
from kaggle_standin import DOWNLOAD_PATH, KEY, LIST_PATH, ROWS, USER


def test_one_file_through_the_kaggle_client_receives_only_that_file(kaggle_standin, kaggle_env, monkeypatch,
                                                                    tmp_path):
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    cwd = Path.cwd()
    source = KaggleSource(Settings(_env_file=None))
    path = source.fetch(FileRequest(name="2019-Dec.csv", source="kaggle"))
    assert path.name == "2019-Dec.csv" and path.read_bytes() == kaggle_standin.files["2019-Dec.csv"]
    # one DownloadDataset call naming the file, redirected to that file alone
    api_call, download = kaggle_standin.requests
    assert api_call["path"] == DOWNLOAD_PATH and api_call["body"] == {
        "ownerSlug": "mkechinov", "datasetSlug": "ecommerce-events-history-in-cosmetics-shop",
        "fileName": "2019-Dec.csv"}
    with zipfile.ZipFile(io.BytesIO(download["served"])) as zf:
        assert zf.namelist() == ["2019-Dec.csv"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["2019-Dec.csv"]  # nothing else was fetched
    # the credentials file existed only for the call, and never in the data folder or cwd
    assert Path.cwd() == cwd and not (cwd / "kaggle.json").exists()
    assert not list((tmp_path / "data").rglob("kaggle.json"))


def test_a_fanned_out_run_plans_its_files_from_the_kaggle_listing(kaggle_standin, kaggle_env, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    source = KaggleSource(Settings(_env_file=None))
    planned = source.plan(RunRequest(source="kaggle", files=("2020-Feb.csv", "2019-Oct.csv")))
    assert [p.name for p in planned] == ["2020-Feb.csv", "2019-Oct.csv"]
    assert [p.name for p in source.plan(RunRequest(source="kaggle"))] == list(MONTH_FILES)
    assert [r["path"] for r in kaggle_standin.requests] == [LIST_PATH, LIST_PATH]  # listed, nothing downloaded
    with pytest.raises(ConfigError, match="2021-Mar.csv, which the source does not have"):
        source.plan(RunRequest(source="kaggle", files=("2021-Mar.csv",)))


def test_missing_credentials_fail_at_once_without_prompting(kaggle_env, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    with pytest.raises(ConfigError, match="needs KAGGLE_USERNAME"):
        KaggleSource(Settings(_env_file=None)).check(RunRequest(source="kaggle"))


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
