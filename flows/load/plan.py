"""Before anything is loaded: the file's identity (stat), its blocks (the unit of the checksum) and
its segments (the unit of parallel COPY), both cut at line starts."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flows.errors import FileChanged
from flows.transform import Header, count_newlines


@dataclass(frozen=True)
class Tuning:
    """How a file is cut and read; tests shrink the sizes so that small files take every path."""

    parallel: int = 2  # segments COPYed at once (files under min_segment_bytes a segment use fewer)
    path: str = "auto"  # auto: the fast path when the file allows it | careful: always the careful path
    min_segment_bytes: int = 16 << 20  # below this a second connection costs more than it saves
    block_bytes: int = 4 << 20  # checksum block; part of the checksum's name
    chunk_bytes: int = 256 << 10  # per read: bounds the memory of the byte-level checks (numpy arrays per chunk)


@dataclass(frozen=True)
class FileStat:
    """What changes when a file is written: compared before and after a load."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: Path) -> FileStat:
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)

    @property
    def recently_changed(self) -> bool:
        """Changed within the last FRESH_SECONDS: the kernel stamps times from a coarse clock, so a
        write right after this one may keep the same times; only the bytes can tell then."""
        return self.ctime_ns > time.time_ns() - FRESH_SECONDS * 1_000_000_000


FRESH_SECONDS = 2


@dataclass(frozen=True)
class Segment:
    index: int
    start: int  # byte offset of its first line
    end: int  # byte offset after its last line
    first_line: int
    end_line: int | None  # first line of the next segment; None for the last
    lines: int | None  # newlines in it, counted while planning (None for the last)


@dataclass(frozen=True)
class Plan:
    stat: FileStat
    header: Header
    block_ends: tuple[int, ...]  # offsets where the checksum's blocks end; the last is the file size
    segments: tuple[Segment, ...]
    block_bytes: int

    @property
    def size(self) -> int:
        return self.stat.size

    def checksum(self, digests: list[bytes]) -> str:
        return f"sha256-blocks{self.block_bytes}:" + hashlib.sha256(b"".join(digests)).hexdigest()


class BlockHasher:
    """SHA-256 of each block that lies in [start, end), fed the bytes in order."""

    def __init__(self, plan: Plan, start: int, seed: bytes = b""):
        self.ends = [e for e in plan.block_ends if e > start]
        self.position = start
        self.current = hashlib.sha256(seed)
        self.digests: list[bytes] = []

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            boundary = self.ends[len(self.digests)] if len(self.digests) < len(self.ends) else None
            take = len(view) if boundary is None else min(len(view), boundary - self.position)
            self.current.update(view[:take])  # releases the GIL: runs beside the COPY threads
            self.position += take
            view = view[take:]
            if boundary is not None and self.position == boundary:
                self.digests.append(self.current.digest())
                self.current = hashlib.sha256()


def plan_file(
    path: Path, header: Header, stat: FileStat, parallel: int, min_segment_bytes: int, block_bytes: int
) -> Plan:
    """Blocks and segments; only the bytes before the last segment are read (to number the lines)."""
    with path.open("rb") as f:
        block_ends = _block_ends(f, stat.size, block_bytes)
        parts = max(1, min(parallel, stat.size // max(min_segment_bytes, 1)))
        cuts = _segment_cuts(block_ends, header.byte_length, stat.size, parts)
        segments = _number_lines(f, cuts, stat.size)
    return Plan(stat, header, tuple(block_ends), tuple(segments), block_bytes)


def _block_ends(f: BinaryIO, size: int, block_bytes: int) -> list[int]:
    """Where each block ends (flows/load/SPEC.md): the first line start at or after each multiple of B.
    A line spanning several multiples ends one block; the next is sought from the next multiple."""
    ends: list[int] = []
    target = block_bytes
    while target < size:
        end = _next_line_start(f, target - 1, size)
        if end >= size:
            break
        ends.append(end)
        target = (end // block_bytes + 1) * block_bytes  # the first multiple whose line start lies after `end`
    return [*ends, size]


def _next_line_start(f: BinaryIO, position: int, size: int) -> int:
    """The offset after the first LF at or after `position` (size when there is none)."""
    f.seek(position)
    while position < size:
        data = f.read(1 << 16)
        if not data:
            break
        newline = data.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(data)
    return size


def _segment_cuts(block_ends: list[int], header_end: int, size: int, parts: int) -> list[int]:
    """Segment starts: the header's end, then the block ends nearest to equal shares of the file."""
    cuts = [header_end]
    inner = [e for e in block_ends[:-1] if e > header_end]
    for i in range(1, parts):
        target = header_end + (size - header_end) * i // parts
        after = [e for e in inner if e >= target and e > cuts[-1]]
        if after:
            cuts.append(after[0])
    return cuts


def _number_lines(f: io.BufferedReader, cuts: list[int], size: int) -> list[Segment]:
    segments: list[Segment] = []
    line = 2
    f.seek(cuts[0])
    buffer = memoryview(bytearray(1 << 20))  # reused: no allocation per read
    for index, (start, end) in enumerate(itertools.pairwise(cuts)):
        newlines = 0
        while f.tell() < end:
            got = f.readinto(buffer[: min(len(buffer), end - f.tell())])
            if not got:
                raise FileChanged(f"the file ended at byte {f.tell()} while it was being planned; it is being written")
            newlines += count_newlines(buffer[:got])
        segments.append(Segment(index, start, end, line, line + newlines, newlines))
        line += newlines
    segments.append(Segment(len(segments), cuts[-1], size, line, None, None))
    return segments


def file_checksum(path: Path, plan: Plan, chunk_bytes: int = 1 << 20) -> str:
    """The checksum of the file as it is now, read in order (to decide whether it changed)."""
    hasher = BlockHasher(plan, 0)
    with path.open("rb") as f:
        while chunk := f.read(chunk_bytes):
            hasher.update(chunk)
    if hasher.position != plan.size:
        raise FileChanged(f"the file has {hasher.position} bytes, not the {plan.size} it had a moment ago")
    return plan.checksum(hasher.digests)
