"""A segment's bytes for COPY, read, checked and hashed by a producer thread of its own, so that this
work overlaps with COPY (the compiled check and SHA-256 release the GIL).

The producer reads the segment in chunks and checks every line (flows.transform.fastcheck) before the
commit can depend on it: a chunk goes to COPY whole, and the line cut by its end is checked with the
next chunk. COPY's reader (`read`) only takes chunks from a small queue, so memory stays bounded
(QUEUE_CHUNKS chunks in flight per segment). `close()` always stops and joins the producer: no
thread is left behind when COPY fails or another segment gives up.
"""

from __future__ import annotations

import queue
import threading
from typing import BinaryIO

from flows.errors import FileChanged
from flows.load.plan import BlockHasher, Plan, Segment
from flows.transform import MAX_FAST_LINE_BYTES, fast_lines

QUEUE_CHUNKS = 2
_END = b""  # the producer's last item: the segment is done, or it gave up
_POLL_SECONDS = 0.05  # how often a blocked producer looks at the stop flag


class SegmentFeed:
    """The file-like object COPY reads one segment from. After the COPY: `lines` (the segment's line
    count, every line proven COPY-safe), `hasher.digests`, and `failure` (the file changed)."""

    def __init__(
        self,
        f: BinaryIO,
        plan: Plan,
        segment: Segment,
        chunk_bytes: int,
        give_up: threading.Event,
        progress,
    ):
        self.f = f
        self.left = segment.end - segment.start
        self.chunk_bytes = chunk_bytes
        self.give_up = give_up  # shared by the file's segments: one refusal ends them all
        self.progress = progress
        self.hasher = BlockHasher(plan, 0 if segment.index == 0 else segment.start)
        if segment.index == 0:
            self.hasher.update(plan.header.raw)
        self.lines = 0
        self.carry = b""  # the start of a line the last chunk cut
        # what stopped the producer (FileChanged, an OSError...), raised again by the COPY thread: psycopg2
        # would turn it into a bare QueryCanceled
        self.error: BaseException | None = None
        self._chunks: queue.Queue[bytes] = queue.Queue(QUEUE_CHUNKS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name=f"segment-{segment.index}-feed", daemon=True)

    def __enter__(self) -> SegmentFeed:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- COPY's side --------------------------------------------------------------------------
    def read(self, size: int = -1) -> bytes:
        while not self.give_up.is_set():
            try:
                chunk = self._chunks.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if self._thread.is_alive():
                    continue
                break  # the producer is gone (it always ends with _END): nothing more will come
            if chunk:
                self.progress(len(chunk))
            return chunk
        return b""

    def close(self) -> None:
        """Stop the producer and wait for it (it may be blocked on a full queue)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                while True:
                    self._chunks.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(_POLL_SECONDS)

    @property
    def complete(self) -> bool:
        """Every byte of the segment was read, checked and handed to COPY (after `close`)."""
        return self.left == 0 and not self.carry and not self.give_up.is_set()

    # --- the producer ---------------------------------------------------------------------------
    def _produce(self) -> None:
        try:
            while not self._stop.is_set() and not self.give_up.is_set():
                if not self.left:
                    self._last_line()
                    break
                chunk = self._read()
                if not self._check(chunk):
                    self.give_up.set()
                    break
                self.hasher.update(chunk)  # releases the GIL, like the check
                if not self._put(chunk):
                    return
        except BaseException as exc:  # raised again by the COPY thread, never lost with this one
            self.error = exc
            self.give_up.set()
        self._put(_END)

    def _read(self) -> bytes:
        chunk = self.f.read(min(self.chunk_bytes, self.left))
        if not chunk:
            raise FileChanged(
                f"the file ended {self.left} bytes early while it was being loaded: it is being "
                "written; nothing was committed, load it again once it is complete"
            )
        self.left -= len(chunk)
        return chunk

    def _check(self, chunk: bytes) -> bool:
        """Count and prove the lines `chunk` completes; keep the line it cuts for the next one."""
        first = chunk.find(b"\n") + 1
        if not first:  # no line end: a line longer than the chunk
            self.carry += chunk
            return len(self.carry) <= MAX_FAST_LINE_BYTES + 2  # longer: the check would refuse it
        last = chunk.rfind(b"\n") + 1
        head, self.carry = self.carry + chunk[:first], chunk[last:]
        return self._count(head) and self._count(memoryview(chunk)[first:last])

    def _last_line(self) -> None:
        """The segment's bytes after its last LF (the file's last line, without its own)."""
        last, self.carry = self.carry, b""
        if last and not self._count(last):
            self.give_up.set()

    def _count(self, data: bytes | memoryview) -> bool:
        found = fast_lines(data)
        if found is None:
            return False
        self.lines += found
        return True

    def _put(self, chunk: bytes) -> bool:
        """Hand a chunk to COPY; False when told to stop while the queue was full."""
        while not self._stop.is_set():
            try:
                self._chunks.put(chunk, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False
