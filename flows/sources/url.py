"""CSV files over http(s): one URL per file (.csv, .csv.gz or .csv.zip), each downloaded to a folder of
its own by the unit of work that loads it, so one URL's failure fails only its file."""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlparse

from flows.contract import FileRequest, RunRequest
from flows.errors import ConfigError, FileRejected
from flows.sources.archives import atomic_write, unpack
from flows.sources.base import Source

DOWNLOAD_TIMEOUT_SECONDS = 60
CHUNK_BYTES = 1 << 20


class UrlSource(Source):
    name = "url"

    def check(self, request: RunRequest) -> None:
        if not request.url:
            raise ConfigError("--source url needs --url URL (the flow's `url` parameter): a .csv, .csv.gz or .zip")
        for url in request.url:
            parsed = urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ConfigError(f"--url {url!r} must be an http(s) URL of a .csv, .csv.gz or .zip file")
            if not file_name(url).endswith(".csv"):
                raise ConfigError(
                    f"--url {url!r}: each URL names one CSV file (.csv, .csv.gz or .csv.zip), whose name is the "
                    "file's name in the ledger; give one --url per file"
                )
        _refuse_shared_names(request.url)

    def files(self, request: RunRequest) -> list[FileRequest]:
        return [self.file(request, file_name(url), url) for url in request.url]

    def fetch(self, file: FileRequest) -> Path:
        url = file.location or ""
        into = download_folder(self.settings.data_dir, url)
        into.mkdir(parents=True, exist_ok=True)
        found = {p.name: p for p in unpack(_download(url, into), into)}
        if file.name not in found:
            raise FileRejected(f"{url} holds {', '.join(sorted(found))}, not {file.name}")
        return found[file.name]


def file_name(url: str) -> str:
    """The CSV file a URL stands for, by its name: .../2019-Oct.csv.gz -> 2019-Oct.csv."""
    name = Path(urlparse(url).path).name
    for suffix in (".gz", ".zip"):
        name = name.removesuffix(suffix)
    return name


def download_folder(data_dir: Path, url: str) -> Path:
    """Where one URL's download goes: a folder of its own, so two URLs never overwrite each other's files."""
    return data_dir / "url" / hashlib.sha256(url.encode()).hexdigest()[:32]


def _refuse_shared_names(urls: tuple[str, ...]) -> None:
    """The ledger keys files by name: two URLs of one name would load one file's rows as the other's."""
    by_name: dict[str, list[str]] = {}
    for url in urls:
        by_name.setdefault(file_name(url), []).append(url)
    shared = {name: same for name, same in by_name.items() if len(same) > 1}
    if shared:
        name, same = next(iter(shared.items()))
        raise ConfigError(
            f"--url {' and --url '.join(same)} would both load as {name} (a file's name is its key in the "
            "ledger); give each URL a file of its own name, or load them in separate runs into separate tables"
        )


def _download(url: str, into: Path) -> Path:
    import httpx

    target = into / (Path(urlparse(url).path).name or "download.csv")
    # a network error is raised as it is: the fetch task retries it
    with httpx.stream("GET", url, follow_redirects=True, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
        if response.status_code != 200:
            raise FileRejected(f"{url}: HTTP {response.status_code}")
        with atomic_write(target) as out:
            for chunk in response.iter_bytes(CHUNK_BYTES):
                out.write(chunk)
    return target
