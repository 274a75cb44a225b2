"""Extract stage, part one: make the source's CSV files available locally.

Every source returns plain file paths; nothing downstream knows where they came from.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import httpx

from flows.errors import ConfigError, FileRejected
from flows.sample import write_sample
from flows.schema import MONTH_FILES
from flows.settings import Settings

SOURCES = ("sample", "local", "url", "kaggle")
DownloadProgress = Callable[[int, int | None], None]  # (bytes just received, total bytes or None)


def _chronological(path: Path) -> tuple:
    """Monthly files (2019-Oct.csv) in calendar order, anything else by name after them."""
    try:
        return (0, datetime.strptime(path.stem, "%Y-%b"), path.name)
    except ValueError:
        return (1, datetime.min, path.name)


def select_files(paths: list[Path], names: list[str] | None) -> list[Path]:
    """Keep the files named in --files (in that order); unknown names, or nothing at all, are a config error."""
    if not paths:
        raise ConfigError("the source has no .csv file to load")
    if not names:
        return sorted(paths, key=_chronological)
    by_name = {p.name: p for p in paths}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ConfigError(
            f"--files names {', '.join(missing)}, which the source does not have; "
            f"available: {', '.join(sorted(by_name)) or 'none'}"
        )
    return [by_name[n] for n in names]


def local_files(folder: Path) -> list[Path]:
    """The folder's *.csv files; none is an error that says what was looked for and what is there."""
    if not folder.is_dir():
        raise ConfigError(f"--path {folder} is not a folder: point it at a folder of .csv files")
    files = sorted(p for p in folder.iterdir() if p.suffix == ".csv" and p.is_file())
    if not files:
        others = sorted(p.name for p in folder.iterdir() if p.is_file())
        found = f"it holds {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}" if others else "it is empty"
        raise ConfigError(
            f"--path {folder}: no file to load, looked for *.csv (lower-case extension, as the dataset "
            f"names its files, e.g. 2019-Oct.csv); {found}"
        )
    return files


def sample_files(settings: Settings, rows_per_file: int | None) -> list[Path]:
    return write_sample(settings.data_dir / "sample", rows_per_file or settings.sample_rows_per_file)


def _unpack(archive: Path, into: Path) -> list[Path]:
    """A downloaded .csv, .csv.gz or .zip -> CSV files in `into` (each written via a temporary name)."""
    name = archive.name
    if name.endswith(".zip"):
        try:
            with zipfile.ZipFile(archive) as zf:
                members = [m for m in zf.infolist() if m.filename.endswith(".csv") and not m.is_dir()]
                if not members:
                    raise FileRejected(f"{name}: the zip archive holds no .csv file")
                # files are unpacked (and tracked in the ledger) by base name: one would replace the other
                bases = [Path(m.filename).name for m in members]
                for base in sorted({b for b in bases if bases.count(b) > 1}):
                    same = [m.filename for m in members if Path(m.filename).name == base]
                    raise FileRejected(
                        f"{name}: the zip archive holds {len(same)} members named {base} "
                        f"({', '.join(same)}); rename them so each file has its own name"
                    )
                out = []
                for member in members:
                    target = into / Path(member.filename).name
                    with zf.open(member) as src, _atomic_write(target) as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    out.append(target)
                return out
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
            raise FileRejected(f"{name}: corrupt zip archive ({exc})") from None
    if name.endswith(".gz"):
        target = into / name.removesuffix(".gz")
        try:
            with gzip.open(archive, "rb") as src, _atomic_write(target) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, EOFError) as exc:
            raise FileRejected(f"{name}: corrupt or truncated gzip ({exc})") from None
        return [target]
    if name.endswith(".csv"):
        return [archive]
    raise FileRejected(f"{name}: expected a .csv, .csv.gz or .zip file")


@contextlib.contextmanager
def _atomic_write(target: Path):
    """Write to a temporary name and rename when complete, so a crash never leaves half a file."""
    partial = target.with_name(target.name + ".partial")
    try:
        with partial.open("wb") as out:
            yield out
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def url_list(url: str | list[str] | None) -> list[str]:
    """The `url` parameter: one URL, or a list of them (--url given more than once)."""
    if not url:
        return []
    return [url] if isinstance(url, str) else list(url)


def url_file_name(url: str) -> str:
    """The CSV file a URL stands for, by its name: .../2019-Oct.csv.gz -> 2019-Oct.csv."""
    name = Path(urlparse(url).path).name
    for suffix in (".gz", ".zip"):
        name = name.removesuffix(suffix)
    return name


def download_urls(urls: list[str], settings: Settings, progress: DownloadProgress | None = None) -> list[Path]:
    return [path for url in urls for path in download_url(url, settings, progress)]


def download_url(url: str, settings: Settings, progress: DownloadProgress | None = None) -> list[Path]:
    parsed = urlparse(url)
    into = settings.data_dir / "url"
    into.mkdir(parents=True, exist_ok=True)
    archive = into / (Path(parsed.path).name or "download.csv")
    with httpx.stream("GET", url, follow_redirects=True, timeout=60) as response:
        if response.status_code != 200:
            raise FileRejected(f"{url}: HTTP {response.status_code}")
        total = int(response.headers["content-length"]) if "content-length" in response.headers else None
        with _atomic_write(archive) as out:
            for chunk in response.iter_bytes(1 << 20):
                out.write(chunk)
                if progress:
                    progress(len(chunk), total)
    return _unpack(archive, into)


def kaggle_login(settings: Settings) -> tuple[str, str]:
    username = settings.kaggle_username.get_secret_value() if settings.kaggle_username else ""
    key = settings.kaggle_key.get_secret_value() if settings.kaggle_key else ""
    if not username or not key:
        missing = [n for n, v in (("KAGGLE_USERNAME", username), ("KAGGLE_KEY", key)) if not v]
        raise ConfigError(
            f"the kaggle source needs {' and '.join(missing)}: set them in the environment or .env "
            "(in Kubernetes: the Secret named by kaggle.existingSecret)"
        )
    return username, key


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def kaggle_credentials(settings: Settings):
    """A kaggle.json (mode 0600) in a private temporary folder, only for the download, and the
    kaggle client's own variables (KAGGLE_USERNAME/KAGGLE_KEY) for as long, restored afterwards.

    opendatasets reads ./kaggle.json from the current directory and otherwise *prompts*, which
    would hang a Job, so missing credentials fail here, before it is called.
    """
    username, key = kaggle_login(settings)
    previous_cwd = Path.cwd()
    previous_config = os.environ.get("KAGGLE_CONFIG_DIR")
    with (
        tempfile.TemporaryDirectory(prefix="kaggle-") as private,
        _environment({"KAGGLE_USERNAME": username, "KAGGLE_KEY": key}),
    ):
        os.chmod(private, 0o700)
        creds = Path(private) / "kaggle.json"
        fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"username": username, "key": key}, f)
        os.environ["KAGGLE_CONFIG_DIR"] = private
        os.chdir(private)
        try:
            yield
        finally:
            os.chdir(previous_cwd)
            if previous_config is None:
                os.environ.pop("KAGGLE_CONFIG_DIR", None)
            else:
                os.environ["KAGGLE_CONFIG_DIR"] = previous_config


def download_kaggle(settings: Settings, refresh: bool = False) -> list[Path]:
    """The dataset through opendatasets (which calls the kaggle client), downloaded once.

    opendatasets skips a non-empty target folder, which would reuse a half-finished download,
    so it downloads into a fresh folder that is renamed into place only when complete.
    """
    import opendatasets

    root = (settings.data_dir / "kaggle").resolve()
    slug = settings.kaggle_dataset.rstrip("/").rsplit("/", 1)[-1]
    final = root / slug
    if final.is_dir() and not refresh and any(final.glob("*.csv")):
        return local_files(final)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    try:
        with kaggle_credentials(settings):
            opendatasets.download(settings.kaggle_dataset, data_dir=str(staging), force=True)
        downloaded = staging / slug
        files = [p for p in downloaded.iterdir() if p.is_file()] if downloaded.is_dir() else []
        for path in files:
            if not path.name.endswith(".csv"):
                _unpack(path, downloaded)
                path.unlink()
        if not any(downloaded.glob("*.csv")):
            raise FileRejected(f"the Kaggle download of {slug} holds no .csv file")
        if final.exists():
            shutil.rmtree(final)
        downloaded.replace(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return local_files(final)


def kaggle_dataset_id(settings: Settings) -> str:
    """owner/slug of ETL_KAGGLE_DATASET (a dataset URL or id), resolved as opendatasets does."""
    from opendatasets.utils.kaggle_direct import get_kaggle_dataset_id

    try:
        return get_kaggle_dataset_id(settings.kaggle_dataset)
    except AssertionError:
        raise ConfigError(
            f"ETL_KAGGLE_DATASET {settings.kaggle_dataset!r} is not a Kaggle dataset URL or owner/dataset id"
        ) from None


def _kaggle_api():
    """The kaggle client opendatasets calls, authenticated from KAGGLE_USERNAME/KAGGLE_KEY."""
    from kaggle import api

    api.authenticate()
    return api


def kaggle_file_names(settings: Settings) -> list[str]:
    """The dataset's CSV files, listed by the kaggle client (ListDatasetFiles), page by page."""
    dataset = kaggle_dataset_id(settings)
    names: list[str] = []
    token = None
    with kaggle_credentials(settings):
        api = _kaggle_api()
        while True:
            page = api.dataset_list_files(dataset, page_token=token, page_size=200)
            if page.error_message:
                raise FileRejected(f"listing the files of the Kaggle dataset {dataset}: {page.error_message}")
            names += [f.name for f in page.dataset_files or [] if f and f.name]
            token = page.next_page_token
            if not token:
                break
    csvs = sorted((n for n in names if n.endswith(".csv")), key=lambda n: _chronological(Path(n)))
    if not csvs:
        raise FileRejected(f"the Kaggle dataset {dataset} lists no .csv file (files: {', '.join(names) or 'none'})")
    return csvs


def download_kaggle_file(settings: Settings, file_name: str) -> Path:
    """One file of the dataset through the kaggle client: the DownloadDataset call with a file
    name. Kaggle wraps large files in <file>.zip; the CSV lands in <data dir>/kaggle/<slug>/."""
    dataset = kaggle_dataset_id(settings)
    root = (settings.data_dir / "kaggle").resolve()
    final = root / dataset.split("/")[1] / file_name
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    try:
        with kaggle_credentials(settings):
            _kaggle_api().dataset_download_file(dataset, file_name, path=str(staging), force=True, quiet=True)
        for path in [p for p in staging.iterdir() if p.is_file() and not p.name.endswith(".csv")]:
            _unpack(path, staging)
            path.unlink()
        got = staging / file_name
        if not got.is_file():
            found = ", ".join(sorted(p.name for p in staging.iterdir())) or "nothing"
            raise FileRejected(f"the Kaggle download of {file_name} from {dataset} holds {found}, not {file_name}")
        final.parent.mkdir(parents=True, exist_ok=True)
        got.replace(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def check_arguments(source: str, path: str | None, url: str | list[str] | None) -> None:
    """The source's own arguments, checked before anything starts."""
    if source not in SOURCES:
        raise ConfigError(f"--source {source!r} is not one of {', '.join(SOURCES)}")
    if source == "local":
        _check_local_path(path)
    if source == "url" and not url_list(url):
        raise ConfigError("--source url needs --url URL (a .csv, .csv.gz or .zip over http(s))")
    for one in url_list(url) if source == "url" else []:
        if urlparse(one).scheme not in ("http", "https") or not urlparse(one).netloc:
            raise ConfigError(f"--url {one!r} must be an http(s) URL of a .csv, .csv.gz or .zip file")


def _check_local_path(path: str | None) -> None:
    if not path:
        raise ConfigError("--source local needs --path DIR (a folder of .csv files)")
    if not Path(path).is_dir():
        raise ConfigError(f"--path {path} is not a folder: point it at a folder of .csv files")


def fetch(
    source: str,
    settings: Settings,
    *,
    path: str | None = None,
    url: str | list[str] | None = None,
    rows_per_file: int | None = None,
    progress: DownloadProgress | None = None,
) -> list[Path]:
    check_arguments(source, path, url)
    if source == "sample":
        return sample_files(settings, rows_per_file)
    if source == "local" and path:  # check_arguments refused a missing --path
        return local_files(Path(path))
    if source == "url":
        return download_urls(url_list(url), settings, progress)
    return download_kaggle(settings)


# --- one file at a time: what a `load-file` Job fetches (no volume is shared between Jobs) -------


@dataclass(frozen=True)
class PlannedFile:
    """A file a run will load, known before anything is downloaded; `url` is its own URL."""

    name: str
    url: str | None = None


def plan_files(
    source: str,
    settings: Settings,
    *,
    path: str | None = None,
    url: str | list[str] | None = None,
    files: list[str] | None = None,
) -> list[PlannedFile]:
    """The files a run loads, by name, without fetching them (sample: the five months; url: one
    file per URL; kaggle: the dataset's listing through the kaggle client)."""
    check_arguments(source, path, url)
    if source == "sample":
        planned = [PlannedFile(name) for name in MONTH_FILES]
    elif source == "local":
        planned = [PlannedFile(p.name) for p in local_files(Path(path or ""))]
    elif source == "url":
        planned = [PlannedFile(url_file_name(u), u) for u in url_list(url)]
        odd = [p.url for p in planned if not p.name.endswith(".csv")]
        if odd:
            raise ConfigError(
                f"--url {odd[0]!r}: with one Job per file, each URL names one CSV file "
                "(.csv, .csv.gz or .csv.zip); give one --url per file"
            )
    else:
        planned = [PlannedFile(name) for name in kaggle_file_names(settings)]
    if not files:
        return planned
    chosen = select_files([Path(p.name) for p in planned], files)  # names, in --files order
    by_name = {p.name: p for p in planned}
    return [by_name[c.name] for c in chosen]


def fetch_file(
    source: str,
    settings: Settings,
    file_name: str,
    *,
    path: str | None = None,
    url: str | None = None,
    rows_per_file: int | None = None,
    progress: DownloadProgress | None = None,
) -> Path:
    """Only `file_name` of the source, where this process runs: the sample's month (the same bytes
    as in the whole sample), the file in the `path` folder, the one `url`, or the Kaggle file."""
    check_arguments(source, path, url)
    if source == "sample":
        if file_name not in MONTH_FILES:
            raise ConfigError(f"the sample has no file {file_name!r}; its files: {', '.join(MONTH_FILES)}")
        (written,) = write_sample(
            settings.data_dir / "sample", rows_per_file or settings.sample_rows_per_file, files=(file_name,)
        )
        return written
    if source == "local":
        return Path(path or "") / file_name
    if source == "url":
        if not isinstance(url, str):
            raise ConfigError("a load-file run of --source url takes the one URL of its file")
        found = {p.name: p for p in download_url(url, settings, progress)}
        if file_name not in found:
            raise FileRejected(f"{url} holds {', '.join(sorted(found))}, not {file_name}")
        return found[file_name]
    return download_kaggle_file(settings, file_name)
