"""`make bench`: our loader against `psql \\copy` (one stream, and parallel) and the tutorial's `to_sql`.

One embedded PostgreSQL with the settings of `make run` (flows.localdb.BULK_LOAD_SETTINGS; autovacuum off so
that no vacuum lands in a timed load), one generated file of N rows, then ROUNDS interleaved rounds (the order
of the three turns each round) of:
  (a) `psql \\copy` of the same rows, pre-transformed, into the same typed table: one stream;
  (b) our full path (flows.load.load_file: check, checksum, ledger, COPY in segments, partition swap) in a
      child process, so that its peak RSS and CPU are its own;
  (d) the pre-transformed rows split at line boundaries into as many parts as (b) has segments, loaded by as
      many concurrent `psql \\copy` into one table, timed from the first start to the last exit: what a DBA
      does by hand and timescaledb-parallel-copy automates. It checks nothing, so it bounds what is reachable.
and once, after the rounds, (c) the tutorial: read_csv(chunksize=100000) + to_datetime + to_sql(append).

Every ratio is the baseline's time divided by ours (higher is better): ratio_vs_copy = a/b,
ratio_vs_parallel_copy = d/b, ratio_vs_seed = c/b (c against the median b). CPU-seconds per million rows:
the client's (b: the loading process during load_file, all its threads; a, d: the psql processes) and the
server's (every PostgreSQL process: backends, I/O workers, checkpointer, WAL writer).
The last line is machine-readable: the medians over the rounds, with their min and max.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa

from flows.csv_spec import CSV_HEADER
from flows.load import ensure_schema, forget_file
from flows.load.plan import FileStat, Tuning, plan_file
from flows.localdb import LocalPostgres, local_cores, postgres_bin_dir
from flows.sample import write_sample
from flows.settings import copy_segments_for
from flows.sql import Names
from flows.transform import MAX_HEADER_BYTES, parse_header

NAMES = Names("public", "bench_b")
PATHS = ("a", "b", "d")
LABELS = {
    "a": "(a) psql \\copy, pre-transformed, one stream",
    "b": "(b) ecommerce-etl full path",
    "d": "(d) psql \\copy x{parts} in parallel",
}

# (b) in a child: its own peak RSS (VmHWM: ru_maxrss would carry the parent's across fork+exec) and the CPU of
# load_file alone (all threads; not the interpreter's start-up and imports).
CHILD = """
import json, resource, sys, sqlalchemy as sa
from pathlib import Path
from flows.load import load_file
from flows.sql import Names
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
engine = sa.create_engine(sys.argv[1])
before = cpu()
r = load_file(engine, Names('public', 'bench_b'), Path(sys.argv[2]), parallel=int(sys.argv[3]))
used = cpu() - before
engine.dispose()
assert r.status == 'loaded' and r.rows_quarantined == 0, r
peak = int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])
print(json.dumps({'seconds': r.seconds, 'rows': r.rows_loaded, 'load_path': r.load_path, 'peak_kb': peak, 'cpu': used}))
"""


@dataclass
class Timing:
    seconds: float
    client_cpu: float
    server_cpu: float
    peak_mb: float = 0.0


@dataclass
class Round:
    order: tuple[str, ...]
    load: float
    timings: dict[str, Timing] = field(default_factory=dict)

    def ratio(self, baseline: str) -> float:
        return self.timings[baseline].seconds / self.timings["b"].seconds


class ServerCpu:
    """CPU-seconds used by every process of one PostgreSQL server, from /proc: the postmaster, its live
    children, and (through the postmaster's cutime/cstime) the children that have exited."""

    def __init__(self, server: LocalPostgres):
        self.pid = int((server.pgdata / "postmaster.pid").read_text().split()[0])
        self.tick = os.sysconf("SC_CLK_TCK")
        self.idle = self.children()

    @staticmethod
    def _stat(pid: int | str) -> list[str] | None:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        return text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on

    def children(self) -> set[int]:
        pids = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (stat := self._stat(entry.name)) and int(stat[1]) == self.pid:
                pids.add(int(entry.name))
        return pids

    def seconds(self) -> float:
        """A child reaped during the scan of /proc would be missed (gone from /proc, not yet in the cutime read
        before) or counted twice: the scan is repeated until the postmaster reaped nothing meanwhile."""
        while True:
            own = self._own()
            total = sum(int(v) for v in own[11:15])  # utime, stime, cutime, cstime
            for child in self.children():
                if stat := self._stat(child):
                    total += sum(int(v) for v in stat[11:15])
            if self._own()[13:15] == own[13:15]:
                return total / self.tick

    def _own(self) -> list[str]:
        own = self._stat(self.pid)
        assert own is not None, "the bench's PostgreSQL is gone"
        return own

    def settle(self, database: str = "bench", timeout: float = 30) -> None:
        """Wait until the connections to `database` are gone (their CPU then sits in the postmaster's cutime)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(self._serves(pid, database) for pid in self.children() - self.idle):
            time.sleep(0.02)

    @staticmethod
    def _serves(pid: int, database: str) -> bool:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        return f" {database} " in f" {title} "


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


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


def split_lines(path: Path, parts: int) -> list[Path]:
    """`path` (a CSV with a header) cut at line boundaries into `parts` files of about equal size, each
    with the header."""
    data = path.read_bytes()
    header_end = data.index(b"\n") + 1
    header, body = data[:header_end], data[header_end:]
    cuts = [0]
    for i in range(1, parts):
        cuts.append(body.index(b"\n", max(len(body) * i // parts, cuts[-1])) + 1)
    cuts.append(len(body))
    out = []
    for i in range(parts):
        part = path.with_name(f"{path.stem}.part{i}.csv")
        part.write_bytes(header + body[cuts[i] : cuts[i + 1]])
        out.append(part)
    return out


def segments_of(path: Path, parallel: int) -> int:
    with path.open("rb") as f:
        header = parse_header(f.readline(MAX_HEADER_BYTES + 1))
    tuning = Tuning(parallel=parallel)
    return len(
        plan_file(path, header, FileStat.of(path), parallel, tuning.min_segment_bytes, tuning.block_bytes).segments
    )


class Bench:
    def __init__(self, server: LocalPostgres, path: Path, rows: int, parallel: int, parts: list[Path], pre: Path):
        self.server = server
        self.path = path
        self.rows = rows
        self.parallel = parallel
        self.parts = parts
        self.pre = pre
        self.url = server.url("bench")
        self.cpu = ServerCpu(server)

    def _psql_copy(self, table: str, files: list[Path]) -> list[subprocess.Popen]:
        return [
            subprocess.Popen(
                [
                    str(postgres_bin_dir() / "psql"),
                    *("-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.server.socket_dir)),
                    *("-p", str(self.server.socket_port), "-U", "postgres", "-d", "bench"),
                    "-c",
                    f"\\copy {table} FROM '{f}' WITH (FORMAT csv, HEADER true)",
                ]
            )
            for f in files
        ]

    def _timed_psql(self, table: str, files: list[Path]) -> tuple[float, float]:
        before = children_cpu()
        started = time.perf_counter()
        for p in self._psql_copy(table, files):
            if p.wait() != 0:
                raise RuntimeError(f"psql \\copy into {table} exited {p.returncode}")
        return time.perf_counter() - started, children_cpu() - before

    def _ours(self) -> tuple[float, float, float]:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, self.url, str(self.path), str(self.parallel)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"(b) failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["load_path"] == "fast" and result["rows"] == self.rows, result
        return result["seconds"], result["cpu"], result["peak_kb"] / 1024

    def _prepare(self, which: str) -> None:
        """Untimed: an empty target, the previous load's dirty pages written, its connections gone."""
        if which == "b":
            engine = sa.create_engine(self.url)
            forget_file(engine, NAMES, self.path.name)
            engine.dispose()
        else:
            self.server.psql(f"TRUNCATE bench_{which}_flat", "bench")
        self.server.psql("CHECKPOINT", "bench")
        self.cpu.settle()

    def run(self, which: str) -> Timing:
        self._prepare(which)
        server_before = self.cpu.seconds()
        if which == "b":
            seconds, client, peak = self._ours()
        else:
            seconds, client = self._timed_psql(f"bench_{which}_flat", [self.pre] if which == "a" else self.parts)
            peak = 0.0
        self.cpu.settle()
        timing = Timing(seconds, client, self.cpu.seconds() - server_before, peak)
        self._verify(which)
        return timing

    def _verify(self, which: str) -> None:
        table = NAMES.table if which == "b" else f"bench_{which}_flat"
        loaded = int(self.server.psql(f"SELECT count(*) FROM {table}", "bench"))
        assert loaded == self.rows, f"({which}) loaded {loaded:,} rows, expected {self.rows:,}"


def tutorial(url: str, path: Path) -> float:
    engine = sa.create_engine(url)
    started = time.perf_counter()
    for chunk in pd.read_csv(path, chunksize=100_000):
        chunk["event_time"] = pd.to_datetime(chunk["event_time"])
        chunk = chunk.drop(columns=["category_code"])
        chunk.to_sql("bench_c", engine, if_exists="append", index=False)
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds


def spread(values: list[float], digits: int = 2) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in (min(values), statistics.median(values), max(values)))


def report(rounds: list[Round], rows: int, parts: int, tutorial_seconds: float | None) -> None:
    per_m = 1e6 / rows
    print(f"\nover {len(rounds)} rounds, min / median / max:")
    for which in PATHS:
        t = [r.timings[which] for r in rounds]
        label = LABELS[which].format(parts=parts)
        print(f"  {label:42s} {spread([x.seconds for x in t])} s")
    ratios = {"copy": [r.ratio("a") for r in rounds], "parallel_copy": [r.ratio("d") for r in rounds]}
    print(f"  ratio_vs_copy = a/b (baseline time / ours)      {spread(ratios['copy'])}")
    print(f"  ratio_vs_parallel_copy = d/b                    {spread(ratios['parallel_copy'])}")
    for which in PATHS:
        t = [r.timings[which] for r in rounds]
        client, server = [x.client_cpu * per_m for x in t], [x.server_cpu * per_m for x in t]
        print(f"  CPU-s per M rows ({which}): client {spread(client)}   server {spread(server)}")
    peak = max(r.timings["b"].peak_mb for r in rounds)
    client_b = statistics.median(r.timings["b"].client_cpu * per_m for r in rounds)
    median_b = statistics.median(r.timings["b"].seconds for r in rounds)
    seed = tutorial_seconds / median_b if tutorial_seconds else float("nan")
    if tutorial_seconds:
        print(
            f"  (c) tutorial read_csv + to_sql, once: {tutorial_seconds:.1f} s; ratio_vs_seed = c/median b = {seed:.1f}"
        )
    line = {
        "ratio_vs_copy": statistics.median(ratios["copy"]),
        "ratio_vs_copy_min": min(ratios["copy"]),
        "ratio_vs_copy_max": max(ratios["copy"]),
        "ratio_vs_parallel_copy": statistics.median(ratios["parallel_copy"]),
        "ratio_vs_parallel_copy_min": min(ratios["parallel_copy"]),
        "ratio_vs_parallel_copy_max": max(ratios["parallel_copy"]),
    }
    print(
        " ".join(f"{k}={v:.2f}" for k, v in line.items())
        + f" ratio_vs_seed={seed:.1f} peak_rss_mb={peak:.0f} client_cpu_s_per_m_rows={client_b:.3f}"
        + f" rounds={len(rounds)} segments={parts}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parallel", type=int, help="(b)'s segments (default: as `make run`, from the cores)")
    parser.add_argument("--skip-tutorial", action="store_true", help="skip (c), the slow one")
    args = parser.parse_args()
    parallel = args.parallel or copy_segments_for(local_cores())

    with tempfile.TemporaryDirectory(prefix="etl-bench-") as tmp:
        work = Path(tmp)
        (path,) = write_sample(work / "in", rows_per_file=args.rows, files=("2019-Oct.csv",))
        parts = segments_of(path, parallel)
        server = LocalPostgres(work / "pg", durable=False).start()
        try:
            server.psql("ALTER SYSTEM SET autovacuum = off")
            server.psql("SELECT pg_reload_conf()")
            server.psql("CREATE DATABASE bench")
            engine = sa.create_engine(server.url("bench"))
            ensure_schema(engine, NAMES)
            engine.dispose()
            for which in ("a", "d"):  # the same typed columns, one heap
                server.psql(f"CREATE TABLE bench_{which}_flat (LIKE {NAMES.table})", "bench")
            pre = work / "pre.csv"
            pretransform(path, pre)
            pieces = split_lines(pre, parts)
            size_mb = path.stat().st_size / 2**20
            print(
                f"{args.rows:,} rows, {size_mb:.0f} MB CSV, PostgreSQL 18 (embedded, make run's settings), "
                f"{local_cores()} cores, {parts} segments; load average {os.getloadavg()[0]:.1f}"
            )
            bench = Bench(server, path, args.rows, parallel, pieces, pre)
            rounds = [run_round(bench, i, args.rounds) for i in range(args.rounds)]
            tutorial_seconds = None if args.skip_tutorial else tutorial(server.url("bench"), path)
        finally:
            server.stop()
    report(rounds, args.rows, parts, tutorial_seconds)


def run_round(bench: Bench, i: int, total: int) -> Round:
    order = PATHS[i % 3 :] + PATHS[: i % 3]
    r = Round(order, os.getloadavg()[0])
    for which in order:
        r.timings[which] = bench.run(which)
    per_m = 1e6 / bench.rows
    t = r.timings
    print(
        f"round {i + 1}/{total} (order {' '.join(order)}, load {r.load:.1f}): "
        + "  ".join(f"({w}) {t[w].seconds:.2f} s" for w in PATHS)
        + f"  a/b {r.ratio('a'):.2f}  d/b {r.ratio('d'):.2f}"
        + f"  CPU-s/M rows client b {t['b'].client_cpu * per_m:.3f}"
        + "  server "
        + " ".join(f"{w} {t[w].server_cpu * per_m:.2f}" for w in PATHS)
        + f"  peak RSS b {t['b'].peak_mb:.0f} MB",
        flush=True,
    )
    return r


if __name__ == "__main__":
    main()
