"""A stand-in for the Kubernetes API server, at the API boundary only (no cluster here; T5 runs
the same code against kind). The clients talking to it are real: the chart's secrets hook
program, and prefect-kubernetes' worker through kubernetes_asyncio.

It keeps Secrets (get, create, JSON merge patch) and records every Job created, answering as
the API server would (201 with the object, generateName resolved, a uid).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TOKEN = "standin-service-account-token"
SECRET = re.compile(r"^/api/v1/namespaces/([^/]+)/secrets(?:/([^/?]+))?$")
JOBS = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs$")


def _merge(target: dict, patch: dict) -> dict:
    """RFC 7386 JSON merge patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
    return target


@dataclass
class KubeStandIn:
    secrets: dict[tuple[str, str], dict] = field(default_factory=dict)
    jobs: list[dict] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def __enter__(self) -> KubeStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str) -> None:
                self._reply(
                    code,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "reason": reason,
                        "code": code,
                        "message": reason,
                    },
                )

            def _handle(self) -> None:
                path = self.path.split("?", 1)[0]
                standin.requests.append((self.command, path))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._status(401, "Unauthorized")
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                if m := SECRET.match(path):
                    return self._secret(m[1], m[2], body)
                if (m := JOBS.match(path)) and self.command == "POST":
                    job = json.loads(json.dumps(body))
                    meta = job.setdefault("metadata", {})
                    meta.setdefault("name", meta.pop("generateName", "job-") + secrets.token_hex(3))
                    meta.update(namespace=m[1], uid=str(uuid.uuid4()))
                    standin.jobs.append(job)
                    return self._reply(201, job)
                return self._status(404, "NotFound")

            def _secret(self, namespace: str, name: str | None, body: dict | None) -> None:
                key = (namespace, name or (body or {}).get("metadata", {}).get("name"))
                if self.command == "GET" and name:
                    live = standin.secrets.get(key)
                    return self._reply(200, live) if live else self._status(404, "NotFound")
                if self.command == "POST" and not name:
                    if key in standin.secrets:
                        return self._status(409, "AlreadyExists")
                    obj = {**body, "metadata": {**body["metadata"], "namespace": namespace}}
                    standin.secrets[key] = obj
                    return self._reply(201, obj)
                if self.command == "PATCH" and name:
                    if key not in standin.secrets:
                        return self._status(404, "NotFound")
                    assert self.headers.get("Content-Type") == "application/merge-patch+json"
                    return self._reply(200, _merge(standin.secrets[key], body))
                return self._status(405, "MethodNotAllowed")

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def put_secret(self, namespace: str, name: str, data: dict[str, str], annotations: dict | None = None) -> None:
        self.secrets[(namespace, name)] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }

    def secret_values(self) -> dict[str, str]:
        """'<secret>/<key>' -> decoded value, like chart_render.secret_values."""
        return {
            f"{name}/{k}": base64.b64decode(v).decode()
            for (_, name), obj in self.secrets.items()
            for k, v in (obj.get("data") or {}).items()
        }

    def service_account_dir(self, folder: Path) -> Path:
        """A service-account folder (token) as a pod would have it mounted."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "token").write_text(TOKEN)
        return folder

    def kubeconfig(self, namespace: str) -> dict:
        """A kubeconfig (as loaded) pointing a Kubernetes client at this stand-in."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {"token": TOKEN}}],
            "contexts": [
                {"name": "standin", "context": {"cluster": "standin", "user": "standin", "namespace": namespace}}
            ],
        }
