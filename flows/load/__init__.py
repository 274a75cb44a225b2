"""Load stage: one file into PostgreSQL, exactly once, with COPY (flows/load/SPEC.md is the contract).

Mechanism (chosen by measurement, see `make bench`): each file becomes its own LIST partition of the
events table, itself RANGE-partitioned by source_line into segments.
  1. The file is cut at line starts into segments; each is COPYed raw, in parallel on its own
     connection, into a typed table that is committed but not attached (invisible). category_code
     is then dropped: metadata only, no rewrite.
  2. One transaction, holding the file's advisory lock from the start, checks the ledger
     (unchanged checksum = skip), assembles the file's partition from the segment tables, drops
     the file's old partition, attaches the new one, replaces the file's quarantine rows and writes
     the ledger. Every ATTACH is proven by CHECK constraints, so this takes milliseconds. Nothing is
     visible before this COMMIT; after it, a rerun skips.
A crash between 1 and 2 leaves only unattached segment tables, which the next load of that file drops
first (those whose CHECK constraint names the file; internal tables are named by the load's id from the
ledger, never by the file name). Two runs at once serialise on the lock: one loads, the other skips.
Rows COPY cannot type are skipped by `ON_ERROR ignore` and quarantined from its notices. A file the
fast path's byte-level check refuses (quotes, ragged rows, lenient values, bad bytes...) is read by
the careful path instead, which parses every record in Python and COPYs the good ones with explicit
line numbers.

Modules: plan (blocks, segments, checksum), context (the per-file load context), fast and careful (the
two staging phases), commit (swap, quarantine, ledger), pipeline (load_file and its phases), ddl
(ensure_schema), forget (forget_file), result (FileResult), db (connections).
"""

from flows.load.ddl import ensure_schema
from flows.load.forget import Forgotten, forget_file
from flows.load.pipeline import load_file
from flows.load.plan import Tuning
from flows.load.result import FileResult, Quarantined, summarise_quarantine

__all__ = [
    "FileResult",
    "Forgotten",
    "Quarantined",
    "Tuning",
    "ensure_schema",
    "forget_file",
    "load_file",
    "summarise_quarantine",
]
