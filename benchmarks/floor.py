"""`python -m benchmarks.floor`: the client CPU a load cannot go below, per million rows.

The fast path's client must read every byte, hash every byte (SHA-256: the file's identity in the ledger) and
send every byte to COPY; the byte-level check comes on top. Each variant below runs in a child process (its
CPU is the child's own, all threads, after its imports) over one generated file, in interleaved rounds:
  read                       the file in the load's chunks, nothing else
  read+sha256                and hash every chunk
  read+send                  and send every chunk to COPY (psycopg2 copy_expert into a table of text columns)
  read+sha256+send           the floor before any check
  read+sha256+check+send     the same with the compiled check (flows.transform.fast_lines) over every line,
                             in one thread, one stream: what the load's producers and COPY threads share out
`make bench` prints the load's own figure (client CPU-s per M rows of (b)) to compare with the last one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import sqlalchemy as sa

from flows.load.plan import Tuning
from flows.localdb import LocalPostgres
from flows.sample import write_sample

VARIANTS = ("read", "read+sha256", "read+send", "read+sha256+send", "read+sha256+check+send")

CHILD = """
import hashlib, json, resource, sys
import psycopg2
from flows.transform import fast_lines
variant, path, dsn, chunk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
class Source:
    def __init__(self, f):
        self.f, self.carry = f, b""
        self.hash = hashlib.sha256() if "sha256" in variant else None
        self.check = "check" in variant
    def read(self, size=-1):
        data = self.f.read(chunk)
        if self.hash is not None:
            self.hash.update(data)
        if self.check and not data and self.carry:  # the last line, without its LF
            assert fast_lines(self.carry) is not None
            self.carry = b""
        if self.check and data:
            last = data.rfind(b"\\n") + 1
            first = data.find(b"\\n") + 1
            if first:
                assert fast_lines(self.carry + data[:first]) is not None
                assert fast_lines(memoryview(data)[first:last]) is not None
                self.carry = data[last:]
            else:
                self.carry += data
        return data
connection = psycopg2.connect(dsn) if "send" in variant else None
with open(path, "rb") as f:
    f.readline()  # the header
    source = Source(f)
    before = cpu()
    if connection is not None:
        connection.cursor().copy_expert("COPY floor FROM STDIN (FORMAT csv)", source, size=chunk)
    else:
        while source.read():
            pass
    used = cpu() - before
if connection is not None:
    connection.rollback()
print(json.dumps({"cpu": used}))
"""


def run_variant(variant: str, path: Path, dsn: str, chunk: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, variant, str(path), dsn, str(chunk)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["cpu"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    chunk = Tuning().chunk_bytes
    with tempfile.TemporaryDirectory(prefix="etl-floor-") as tmp:
        work = Path(tmp)
        (path,) = write_sample(work / "in", rows_per_file=args.rows, files=("2019-Oct.csv",))
        server = LocalPostgres(work / "pg", durable=False).start()
        try:
            server.psql("CREATE DATABASE floor")
            server.psql("CREATE UNLOGGED TABLE floor (" + ", ".join(f"c{i} text" for i in range(9)) + ")", "floor")
            dsn = sa.make_url(server.url("floor")).set(drivername="postgresql").render_as_string(hide_password=False)
            print(
                f"{args.rows:,} rows, {path.stat().st_size / 2**20:.0f} MB, chunks of {chunk >> 10} KiB, "
                f"load average {os.getloadavg()[0]:.1f}"
            )
            used: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for i in range(args.rounds):
                order = VARIANTS[i % len(VARIANTS) :] + VARIANTS[: i % len(VARIANTS)]
                for variant in order:
                    used[variant].append(run_variant(variant, path, dsn, chunk) * 1e6 / args.rows)
        finally:
            server.stop()
    print(f"client CPU-s per M rows over {args.rounds} interleaved rounds, min / median / max:")
    for variant in VARIANTS:
        xs = used[variant]
        print(f"  {variant:24s} {min(xs):.3f} / {statistics.median(xs):.3f} / {max(xs):.3f}")


if __name__ == "__main__":
    main()
