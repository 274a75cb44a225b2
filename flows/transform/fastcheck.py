"""The fast path's line rules: a proof, over raw bytes and at memory speed, that PostgreSQL's COPY
reads every line of a chunk as the careful path would.

COPY parses CSV and the column types more leniently than flows/load/SPEC.md allows (quotes,
today/24:00:00 timestamps, 0x10 and 1_000 integers, 1e5 prices, uuids without hyphens...). So the
fast path takes a chunk only when every line is nine plain fields in the dataset's own order, with the
exact timestamp layout, plain numbers and a canonical (or empty) uuid, no quote anywhere and CR only in
CRLF line ends. Values of the right layout but out of range (31 April, a 20-digit id, an unknown event
type) are left to COPY, which refuses them with the reasons the careful path would give.

`fast_lines(chunk)` is the number of lines of `chunk` (whole lines of a canonical-order file; the
file's last line may lack its LF) when every line passes, else None. It is compiled
(flows/transform/_fastcheck.c: one pass, no copy, the GIL released so that it overlaps with COPY);
tests/fastcheck_reference.py states the same rules with numpy, and the tests prove both agree.
"""

from __future__ import annotations

from flows.transform.fields import MAX_NUMBER_CHARS

try:
    import flows.transform._fastcheck as _fastcheck
except ImportError as exc:  # pragma: no cover - a checkout used without installing it
    raise ImportError(
        "the compiled check flows/transform/_fastcheck.c is not built: run `make venv` (or "
        "`pip install -e .`, which needs a C compiler and the Python headers: gcc and python3-dev)"
    ) from exc

MAX_FAST_LINE_BYTES = 65_536  # <= MAX_FIELD_CHARS and < MAX_RECORD_BYTES: no length rule is left to check

if (_fastcheck.MAX_LINE_BYTES, _fastcheck.MAX_NUMBER_CHARS) != (MAX_FAST_LINE_BYTES, MAX_NUMBER_CHARS):
    raise ImportError("flows/transform/_fastcheck.c's limits differ from the Python ones: rebuild it (make venv)")

fast_lines = _fastcheck.lines
count_newlines = _fastcheck.newlines  # LF bytes in a buffer, at memory speed (the plan numbers lines with it)
