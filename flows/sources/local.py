"""A folder of CSV files where the run is (its files never leave this process)."""

from __future__ import annotations

from pathlib import Path

from flows.contract import FileRequest, RunRequest
from flows.errors import ConfigError, FileRejected
from flows.sources.base import Source

FILE_SUFFIX = ".csv"


class LocalSource(Source):
    name = "local"
    fetched_anywhere = False

    def check(self, request: RunRequest) -> None:
        if not request.path:
            raise ConfigError("--source local needs --path DIR (the flow's `path` parameter): a folder of .csv files")
        if not Path(request.path).is_dir():
            raise ConfigError(f"--path {request.path} is not a folder: point it at a folder of .csv files")

    def files(self, request: RunRequest) -> list[FileRequest]:
        return [self.file(request, p.name, str(p)) for p in csv_files(Path(request.path or ""))]

    def fetch(self, file: FileRequest) -> Path:
        path = Path(file.location or file.name)
        if not path.is_file():
            raise FileRejected(f"file not found: {path}")
        return path

    def describe_fetch(self, file: FileRequest, path: Path) -> str | None:
        return None  # nothing was fetched


def csv_files(folder: Path) -> list[Path]:
    """The folder's *.csv files; none is an error that says what was looked for and what is there."""
    files = sorted(p for p in folder.iterdir() if p.suffix == FILE_SUFFIX and p.is_file())
    if not files:
        others = sorted(p.name for p in folder.iterdir() if p.is_file())
        found = f"it holds {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}" if others else "it is empty"
        raise ConfigError(
            f"--path {folder}: no file to load, looked for *.csv (lower-case extension, as the dataset "
            f"names its files, e.g. 2019-Oct.csv); {found}"
        )
    return files
