"""A stand-in for Kaggle's API (the internet boundary; no internet here), for the real opendatasets
and kaggle client code.

kaggle 2.2.5 sends `POST /api/v1/datasets.DatasetApiService/DownloadDataset` with HTTP Basic auth to
http://localhost:80 when KAGGLE_API_ENVIRONMENT=LOCALHOST (its TEST mode, port 7777, is not honoured
on this path, as measured with kaggle 2.2.5), and expects the dataset's zip in the response. With a
`fileName` in the body the same call downloads one file (Kaggle redirects to it, wrapped in
<file>.zip): what each `load-file` Job of a fanned-out run does; `ListDatasetFiles` lists the files
a run plans by. The stand-in serves all five months and honours the file name, so a test can tell a
one-file download from the whole dataset. The fixtures are in tests/fixtures/standins.py.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from flows.sample import write_sample

USER, KEY = "data-engineer", "k-3f9a1c0e5d7b"
DOWNLOAD_PATH = "/api/v1/datasets.DatasetApiService/DownloadDataset"


def port_80_free() -> bool:
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
