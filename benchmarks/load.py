"""`make bench`: our loader against `psql \\copy` (the limit) and the tutorial's `to_sql`, side by side.

One embedded PostgreSQL, one generated file of N rows, three loads into fresh tables:
  (a) psql \\copy of the same rows, pre-transformed, into the same typed table
  (b) our full path (flows.load.load_file: checksum, ledger, COPY, partition swap), in a child
      process so its peak RSS is its own
  (c) the tutorial: read_csv(chunksize=100000) + to_datetime + drop category_code + to_sql(append)
The last line is machine-readable: ratio_vs_copy=<b/a> ratio_vs_seed=<b/c> peak_rss_mb=<z>.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa

from flows.csv_spec import CSV_HEADER
from flows.load import ensure_schema
from flows.localdb import LocalPostgres
from flows.sample import write_sample
from flows.sql import Names


def _ours_in_child(url: str, path: Path) -> tuple[float, float]:
    """Run (b) in a child process; returns (seconds, peak RSS in MB)."""
    code = (
        "import json, sys, sqlalchemy as sa; from pathlib import Path;"
        "from flows.load import load_file; from flows.sql import Names;"
        "e = sa.create_engine(sys.argv[1]); r = load_file(e, Names('public', 'bench_b'), Path(sys.argv[2]));"
        "assert r.status == 'loaded' and r.rows_quarantined == 0, r;"
        # VmHWM, not ru_maxrss: Linux carries the parent's RSS into a child's ru_maxrss across fork+exec
        "peak = int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]);"
        "print(json.dumps({'seconds': r.seconds, 'rows': r.rows_loaded, 'load_path': r.load_path, 'peak_kb': peak}))"
    )
    done = subprocess.run([sys.executable, "-c", code, url, str(path)], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["load_path"] == "fast", result
    return result["seconds"], result["peak_kb"] / 1024


def pretransform(path: Path, out: Path, block_bytes: int = 16 << 20) -> None:
    """The rows as the typed table stores them (no category_code, with lineage), for (a); streamed in blocks,
    every column kept as its text, so memory stays flat whatever the file size."""
    text = dict.fromkeys(CSV_HEADER, pa.string())
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=block_bytes),
        convert_options=pacsv.ConvertOptions(column_types=text, strings_can_be_null=True),
    )
    line = 2
    with pacsv.CSVWriter(out, _pretransformed_schema(), write_options=pacsv.WriteOptions(quoting_style="none")) as w:
        for batch in reader:
            batch = batch.drop_columns(["category_code"])
            batch = batch.append_column("source_file", pa.array([path.name] * batch.num_rows))
            batch = batch.append_column("source_line", pa.array(range(line, line + batch.num_rows), pa.int64()))
            line += batch.num_rows
            w.write_batch(batch)


def _pretransformed_schema() -> pa.Schema:
    kept = [pa.field(name, pa.string()) for name in CSV_HEADER if name != "category_code"]
    return pa.schema([*kept, pa.field("source_file", pa.string()), pa.field("source_line", pa.int64())])


def _tutorial(url: str, path: Path) -> float:
    engine = sa.create_engine(url)
    started = time.perf_counter()
    for chunk in pd.read_csv(path, chunksize=100_000):
        chunk["event_time"] = pd.to_datetime(chunk["event_time"])
        chunk = chunk.drop(columns=["category_code"])
        chunk.to_sql("bench_c", engine, if_exists="append", index=False)
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-tutorial", action="store_true", help="skip (c), the slow one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="etl-bench-") as tmp:
        work = Path(tmp)
        (path,) = write_sample(work / "in", rows_per_file=args.rows, files=("2019-Oct.csv",))
        size_mb = path.stat().st_size / 2**20
        print(f"{args.rows:,} rows, {size_mb:.0f} MB CSV, PostgreSQL 18 (embedded), one server for all three")
        server = LocalPostgres(work / "pg", durable=False).start()
        server.psql("CREATE DATABASE bench")
        url = server.url("bench")
        engine = sa.create_engine(url)
        ensure_schema(engine, Names("public", "bench_b"))
        ensure_schema(engine, Names("public", "bench_a"))
        server.psql("CREATE TABLE bench_a_flat (LIKE bench_a)", "bench")  # same typed columns, one heap

        pre = work / "pre.csv"
        pretransform(path, pre)
        started = time.perf_counter()
        server.psql(f"\\copy bench_a_flat FROM '{pre}' WITH (FORMAT csv, HEADER true)", "bench")
        copy_seconds = time.perf_counter() - started

        ours_seconds, peak_mb = _ours_in_child(url, path)
        loaded = int(server.psql("SELECT count(*) FROM bench_b", "bench"))
        assert loaded == args.rows == int(server.psql("SELECT count(*) FROM bench_a_flat", "bench"))

        tutorial_seconds = None if args.skip_tutorial else _tutorial(url, path)
        server.stop()

    rate = lambda s: args.rows / s  # noqa: E731
    print(f"(a) psql \\copy, pre-transformed : {copy_seconds:7.2f} s  {rate(copy_seconds):>12,.0f} rows/s")
    print(f"(b) ecommerce-etl full path      : {ours_seconds:7.2f} s  {rate(ours_seconds):>12,.0f} rows/s", end="")
    print(f"  peak RSS {peak_mb:.0f} MB")
    if tutorial_seconds:
        print(f"(c) tutorial read_csv + to_sql   : {tutorial_seconds:7.2f} s  {rate(tutorial_seconds):>12,.0f} rows/s")
    ratio_copy = copy_seconds / ours_seconds
    ratio_seed = (tutorial_seconds / ours_seconds) if tutorial_seconds else float("nan")
    print(f"b/a = {ratio_copy:.2f} (target >= 0.8)   b/c = {ratio_seed:.1f} (target >= 25)")
    print(f"ratio_vs_copy={ratio_copy:.2f} ratio_vs_seed={ratio_seed:.1f} peak_rss_mb={peak_mb:.0f}")


if __name__ == "__main__":
    main()
