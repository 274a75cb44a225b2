"""What every source is: a plan of files by name, then each file fetched on its own."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from flows.contract import FileRequest, RunRequest, SourceName
from flows.errors import ConfigError
from flows.settings import Settings


class Source(ABC):
    name: ClassVar[SourceName]
    # False: its files exist only where the run is (a local folder), so they load in the run's process
    fetched_anywhere: ClassVar[bool] = True

    def __init__(self, settings: Settings):
        self.settings = settings

    def check(self, request: RunRequest) -> None:  # noqa: B027 - most sources take no arguments to check
        """The request's arguments for this source (and its credentials), before anything starts."""

    @abstractmethod
    def files(self, request: RunRequest) -> list[FileRequest]:
        """Every file of the source, by name, in load order; nothing is fetched."""

    @abstractmethod
    def fetch(self, file: FileRequest) -> Path:
        """Only this file, where this process runs; a FileRejected (only this file fails) when it cannot."""

    def plan(self, request: RunRequest, run_id: str = "") -> list[FileRequest]:
        """The files the run loads (`request.files`, in that order, when given), with the run's table and id."""
        self.check(request)
        chosen = select_files(self.files(request), request.files)
        return [f.model_copy(update={"table": request.table, "run_id": run_id}) for f in chosen]

    def file(self, request: RunRequest, name: str, location: str | None = None) -> FileRequest:
        return FileRequest(name=name, source=self.name, location=location, rows_per_file=request.rows_per_file)

    def describe_fetch(self, file: FileRequest, path: Path) -> str | None:
        """What fetching did, for the run's log (None: nothing worth saying)."""
        return f"{self.name}: fetched {file.name} ({path.stat().st_size:,} bytes)"


def chronological(name: str) -> tuple:
    """Monthly files (2019-Oct.csv) in calendar order, anything else by name after them."""
    try:
        return (0, datetime.strptime(Path(name).stem, "%Y-%b"), name)
    except ValueError:
        return (1, datetime.min, name)


def select_files(files: list[FileRequest], names: tuple[str, ...] | None) -> list[FileRequest]:
    """The files named in `names` (in that order), else all of them in calendar order; unknown names, or no
    file at all, are a configuration error."""
    if not files:
        raise ConfigError("the source has no .csv file to load")
    if not names:
        return sorted(files, key=lambda f: chronological(f.name))
    by_name = {f.name: f for f in files}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ConfigError(
            f"--files names {', '.join(missing)}, which the source does not have; "
            f"available: {', '.join(sorted(by_name)) or 'none'}"
        )
    return [by_name[n] for n in names]
