"""T1: the benchmark harness's own data step: the pre-transformed copy (a) loads must be the same rows as
the raw file, with lineage, whatever the block size."""

from __future__ import annotations

import csv

from benchmarks.load import pretransform
from flows.sample import write_sample
from flows.csv_spec import CSV_HEADER


def test_pretransform_streams_rows_with_lineage(tmp_path):
    (raw,) = write_sample(tmp_path / "in", rows_per_file=3000, files=("2019-Nov.csv",))
    out = tmp_path / "pre.csv"
    pretransform(raw, out, block_bytes=16 << 10)  # ~25 blocks: line numbers must run on across them
    with raw.open() as a, out.open() as b:
        src, pre = list(csv.reader(a)), list(csv.reader(b))
    kept = [i for i, name in enumerate(CSV_HEADER) if name != "category_code"]
    assert pre[0] == [CSV_HEADER[i] for i in kept] + ["source_file", "source_line"]
    assert len(pre) == len(src) == 3001
    for line, (s, p) in enumerate(zip(src[1:], pre[1:], strict=True), start=2):
        assert p == [s[i] for i in kept] + ["2019-Nov.csv", str(line)]
