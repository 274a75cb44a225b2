"""The kaggle source through the real opendatasets and kaggle client code.

The only stand-in in the project: Kaggle's API itself (no internet here). kaggle 2.2.5 sends
`POST /api/v1/datasets.DatasetApiService/DownloadDataset` with HTTP Basic auth to
http://localhost:80 when KAGGLE_API_ENVIRONMENT=LOCALHOST (its TEST mode, port 7777, is not
honoured on this path, as measured with kaggle 2.2.5), and expects the dataset's zip in the response.
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flows.sample import write_sample
from flows.errors import ConfigError
from flows.settings import Settings
from flows.sources import download_kaggle

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


@pytest.fixture
def kaggle_standin(tmp_path):
    if not _port_80_free():
        pytest.skip("port 80 on 127.0.0.1 is taken or needs root: the kaggle client only talks to localhost:80")
    csvs = write_sample(tmp_path / "dataset", rows_per_file=300, files=("2019-Oct.csv", "2019-Nov.csv"))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for p in csvs:
            zf.write(p, p.name)
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            expected = "Basic " + base64.b64encode(f"{USER}:{KEY}".encode()).decode()
            if self.path != DOWNLOAD_PATH:
                self.send_error(404)
                return
            if self.headers.get("Authorization") != expected:
                self.send_error(401)
                return
            payload = archive.getvalue()
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 80), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield requests
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
    assert [p.name for p in files] == ["2019-Nov.csv", "2019-Oct.csv"]
    assert all(len(p.read_text().splitlines()) == 301 for p in files)
    (request,) = kaggle_standin
    assert json.loads(request["body"]) == {"ownerSlug": "mkechinov", "datasetSlug": "ecommerce-events-history-in-cosmetics-shop"}
    # the credentials file existed only for the call, and never in the data folder or cwd
    assert Path.cwd() == cwd and not (cwd / "kaggle.json").exists()
    assert not list((tmp_path / "data").rglob("kaggle.json"))
    # a second call reuses the completed download
    assert download_kaggle(Settings(_env_file=None)) == files and len(kaggle_standin) == 1


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
    assert json.loads(done.stdout)["rows_loaded"] == 600
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
