"""The kaggle source through the real opendatasets and kaggle client code.

The only stand-in in the project: Kaggle's API itself (no internet here). kaggle 2.2.5 sends
`POST /api/v1/datasets.DatasetApiService/DownloadDataset` with HTTP Basic auth to
http://localhost:80 when KAGGLE_API_ENVIRONMENT=LOCALHOST (its TEST mode, port 7777, is not
honoured on this path, as measured with kaggle 2.2.5), and expects the dataset's zip in the response.
With a `fileName` in the body the same call downloads one file (Kaggle redirects to it, wrapped
in <file>.zip): what each `load-file` Job of a fanned-out run does; `ListDatasetFiles` lists
the files the run plans by. The stand-in serves all five months and honours the file name, so
a test can tell a one-file download from the whole dataset.
"""

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flows.sample import write_sample
from flows.errors import ConfigError
from flows.schema import MONTH_FILES
from flows.settings import Settings
from flows.sources import download_kaggle, download_kaggle_file, plan_files

USER, KEY = "data-engineer", "k-3f9a1c0e5d7b"
DOWNLOAD_PATH = "/api/v1/datasets.DatasetApiService/DownloadDataset"


def _port_80_free() -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the stand-in itself binds
        try:
            s.bind(("127.0.0.1", 80))
        except OSError:
            return False
    return True


DATASET = "mkechinov/ecommerce-events-history-in-cosmetics-shop"
LIST_PATH = "/api/v1/datasets.DatasetApiService/ListDatasetFiles"
STORAGE = "/storage/"  # where a single-file download is redirected, as Kaggle redirects to its storage
ROWS = 300


@dataclass
class StandIn:
    """What the stand-in was asked and what it answered: [{path, auth, body, served}]."""

    files: dict[str, bytes]
    requests: list[dict] = field(default_factory=list)

    def downloads(self) -> list[dict]:
        return [r for r in self.requests if r["path"] == DOWNLOAD_PATH]


def _zip(members: dict[str, bytes]) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return archive.getvalue()


def start_standin(tmp_path: Path) -> tuple[StandIn, ThreadingHTTPServer]:
    """Kaggle's API for the five monthly files: the whole dataset as one zip, one file (wrapped
    in <file>.zip, behind a redirect, as Kaggle serves large files), and the file listing."""
    csvs = write_sample(tmp_path / "dataset", rows_per_file=ROWS)
    standin = StandIn({p.name: p.read_bytes() for p in csvs})
    expected = "Basic " + base64.b64encode(f"{USER}:{KEY}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, payload: bytes, content_type: str, record: dict) -> None:
            record["served"] = payload
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            record = {"path": self.path, "auth": self.headers.get("Authorization"), "body": json.loads(body or b"{}"),
                      "served": None}
            standin.requests.append(record)
            if self.headers.get("Authorization") != expected:
                self.send_error(401)
            elif record["body"].get("ownerSlug") + "/" + record["body"].get("datasetSlug", "") != DATASET:
                self.send_error(404)
            elif self.path == LIST_PATH:
                listing = {"datasetFiles": [{"name": n, "totalBytes": len(b)} for n, b in standin.files.items()],
                           "nextPageToken": ""}
                self._send(json.dumps(listing).encode(), "application/json", record)
            elif self.path == DOWNLOAD_PATH and "fileName" in record["body"]:
                name = record["body"]["fileName"]
                if name not in standin.files:
                    self.send_error(404)
                    return
                self.send_response(302)
                self.send_header("Location", f"{STORAGE}{DATASET}/{name}.zip")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == DOWNLOAD_PATH:
                self._send(_zip(standin.files), "application/zip", record)
            else:
                self.send_error(404)

        def do_GET(self):  # noqa: N802 - the redirected single-file download
            record = {"path": self.path, "auth": self.headers.get("Authorization"), "body": None, "served": None}
            standin.requests.append(record)
            name = self.path.removeprefix(f"{STORAGE}{DATASET}/").removesuffix(".zip")
            if not self.path.startswith(STORAGE) or name not in standin.files:
                self.send_error(404)
                return
            self._send(_zip({name: standin.files[name]}), "application/zip", record)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 80), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return standin, server


@pytest.fixture
def kaggle_standin(tmp_path):
    if not _port_80_free():
        pytest.skip("port 80 on 127.0.0.1 is taken or needs root: the kaggle client only talks to localhost:80")
    standin, server = start_standin(tmp_path)
    yield standin
    server.shutdown()
    server.server_close()


@pytest.fixture
def kaggle_env(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    monkeypatch.setenv("ETL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


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
    cli = str(Path(sys.executable).parent / "ecommerce-etl")
    done = subprocess.run([cli, "run", "--source", "kaggle", "--database-url", data_db, "--json"],
                          capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows_loaded"] == len(MONTH_FILES) * ROWS
    assert KEY not in done.stdout + done.stderr


def test_cli_without_credentials_exits_2_even_with_a_terminal(kaggle_env, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env["DATABASE_URL"] = "postgresql://u@127.0.0.1:1/d"
    cli = str(Path(sys.executable).parent / "ecommerce-etl")
    # `script` gives the process a real TTY, where a prompt would otherwise wait for input
    done = subprocess.run(["script", "-qec", f"{cli} run --source kaggle", "/dev/null"],
                          capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stdout
    assert "needs KAGGLE_USERNAME and KAGGLE_KEY" in done.stdout
