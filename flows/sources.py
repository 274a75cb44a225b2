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
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import httpx

from flows.errors import ConfigError, FileRejected
from flows.sample import write_sample
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
        raise ConfigError(f"--path {folder}: no file to load, looked for *.csv (lower-case extension, as the dataset "
                          f"names its files, e.g. 2019-Oct.csv); {found}")
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
                    raise FileRejected(f"{name}: the zip archive holds {len(same)} members named {base} "
                                       f"({', '.join(same)}); rename them so each file has its own name")
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
def kaggle_credentials(settings: Settings):
    """A kaggle.json (mode 0600) in a private temporary folder, only for the download.

    opendatasets reads ./kaggle.json from the current directory and otherwise *prompts*, which
    would hang a Job, so missing credentials fail here, before it is called.
    """
    username, key = kaggle_login(settings)
    previous_cwd = Path.cwd()
    previous_config = os.environ.get("KAGGLE_CONFIG_DIR")
    with tempfile.TemporaryDirectory(prefix="kaggle-") as private:
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


def check_arguments(source: str, path: str | None, url: str | None) -> None:
    """The source's own arguments, checked before anything starts."""
    if source not in SOURCES:
        raise ConfigError(f"--source {source!r} is not one of {', '.join(SOURCES)}")
    if source == "local" and not path:
        raise ConfigError("--source local needs --path DIR (a folder of .csv files)")
    if source == "local" and not Path(path).is_dir():
        raise ConfigError(f"--path {path} is not a folder: point it at a folder of .csv files")
    if source == "url" and not url:
        raise ConfigError("--source url needs --url URL (a .csv, .csv.gz or .zip over http(s))")
    if source == "url" and (urlparse(url).scheme not in ("http", "https") or not urlparse(url).netloc):
        raise ConfigError(f"--url {url!r} must be an http(s) URL of a .csv, .csv.gz or .zip file")


def fetch(source: str, settings: Settings, *, path: str | None = None, url: str | None = None,
          rows_per_file: int | None = None, progress: DownloadProgress | None = None) -> list[Path]:
    check_arguments(source, path, url)
    if source == "sample":
        return sample_files(settings, rows_per_file)
    if source == "local":
        return local_files(Path(path))
    if source == "url":
        return download_url(url, settings, progress)
    return download_kaggle(settings)
