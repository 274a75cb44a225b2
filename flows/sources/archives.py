"""Downloaded files made into CSV files: .csv as is, .csv.gz unpacked, .zip members unpacked; every
file written under a temporary name of its own and renamed when complete."""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from flows.errors import FileRejected

COPY_BYTES = 1 << 20


@contextlib.contextmanager
def atomic_write(target: Path) -> Iterator[BinaryIO]:
    """A new file at `target`, or nothing: a crash never leaves half a file, and two writers of the same
    target (two runs at once) never share a temporary file."""
    fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)


def unpack(archive: Path, into: Path) -> list[Path]:
    """A downloaded .csv, .csv.gz or .zip -> the CSV files it holds, in `into`."""
    name = archive.name
    if name.endswith(".zip"):
        return _unzip(archive, into)
    if name.endswith(".gz"):
        target = into / name.removesuffix(".gz")
        try:
            with gzip.open(archive, "rb") as src, atomic_write(target) as dst:
                shutil.copyfileobj(src, dst, COPY_BYTES)
        except (OSError, EOFError) as exc:
            raise FileRejected(f"{name}: corrupt or truncated gzip ({exc})") from None
        return [target]
    if name.endswith(".csv"):
        return [archive]
    raise FileRejected(f"{name}: expected a .csv, .csv.gz or .zip file")


def _unzip(archive: Path, into: Path) -> list[Path]:
    name = archive.name
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if m.filename.endswith(".csv") and not m.is_dir()]
            if not members:
                raise FileRejected(f"{name}: the zip archive holds no .csv file")
            # members are unpacked (and tracked in the ledger) by base name: one would replace the other
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
                with zf.open(member) as src, atomic_write(target) as dst:
                    shutil.copyfileobj(src, dst, COPY_BYTES)
                out.append(target)
            return out
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise FileRejected(f"{name}: corrupt zip archive ({exc})") from None
