"""T1: the sample generator: per-month determinism (what a per-file child run regenerates), chunked
generation for the full-scale sample, and `ecommerce-etl sample --full`."""

from __future__ import annotations

import csv
import io

import pandas as pd
import pytest

import flows.sample as sample
from flows.cli import main
from flows.csv_spec import CSV_HEADER, MONTH_FILES


def test_one_month_alone_has_the_same_bytes_as_in_the_five_file_sample(tmp_path):
    five = sample.write_sample(tmp_path / "all", rows_per_file=3000)
    for path in five:
        (alone,) = sample.write_sample(tmp_path / path.stem, rows_per_file=3000, files=(path.name,))
        assert alone.read_bytes() == path.read_bytes(), path.name
    # and the months differ from each other (each has its own seed)
    assert len({p.read_bytes()[200:2000] for p in five}) == len(five)


def test_full_rows_are_the_real_datasets():
    assert tuple(sample.FULL_ROWS) == MONTH_FILES
    assert sum(sample.FULL_ROWS.values()) == 20_692_840
    assert sample.FULL_ROWS["2019-Nov.csv"] == 4_635_837


def _read(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"user_session": str})


def test_month_that_fits_one_chunk_is_generated_in_one_piece():
    frames = list(sample.generate_month_chunks("2019-Dec.csv", 2000, seed=5, chunk_rows=2000))
    assert len(frames) == 1
    pd.testing.assert_frame_equal(frames[0], sample.generate_month("2019-Dec.csv", 2000, seed=5))


def test_chunked_month_keeps_counts_order_and_distributions(tmp_path):
    rows, chunk = 25_003, 4000
    frames = list(sample.generate_month_chunks("2020-Feb.csv", rows, seed=11, chunk_rows=chunk))
    assert len(frames) == 7 and all(len(f) <= chunk for f in frames)
    assert sum(map(len, frames)) == rows

    (path,) = sample.write_sample(tmp_path, {"2020-Feb.csv": rows}, seed=11, files=("2020-Feb.csv",), chunk_rows=chunk)
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(CSV_HEADER) and len(lines) == rows + 1
    assert all(len(r) == len(CSV_HEADER) for r in csv.reader(io.StringIO("\n".join(lines[1:]))))
    frame = _read(path)
    times = pd.to_datetime(frame.event_time.str.removesuffix(" UTC"))
    assert times.is_monotonic_increasing  # chunks are consecutive slices of the month
    assert times.dt.month.eq(2).all() and times.dt.day.min() == 1 and times.dt.day.max() == 29  # 2020 is a leap year
    assert frame.duplicated().mean() == pytest.approx(0.05, abs=0.005)
    assert frame.event_type.value_counts(normalize=True)["view"] == pytest.approx(0.467, abs=0.02)
    # the pools are shared: the same users and sessions come back in other chunks
    first, last = frames[0], frames[-1]
    assert set(first.user_id) & set(last.user_id)
    assert set(first.user_session.dropna()) & set(last.user_session.dropna())

    (again,) = sample.write_sample(
        tmp_path / "again", {"2020-Feb.csv": rows}, seed=11, files=("2020-Feb.csv",), chunk_rows=chunk
    )
    assert again.read_bytes() == path.read_bytes()


def test_progress_reports_every_row_once(tmp_path):
    seen: dict[str, int] = {}

    def progress(name: str, n: int) -> None:
        seen[name] = seen.get(name, 0) + n

    counts = {"2019-Oct.csv": 2500, "2019-Nov.csv": 900}
    sample.write_sample(tmp_path, counts, files=tuple(counts), chunk_rows=1000, progress=progress)
    assert seen == counts


def test_cli_sample_full_writes_the_full_row_counts(tmp_path, monkeypatch, capsys):
    # The real counts make 2.4 GB (make bench-full); the same code path with small counts here.
    small = {name: 1500 + 10 * i for i, name in enumerate(MONTH_FILES)}
    monkeypatch.setattr(sample, "FULL_ROWS", small)
    assert main(["sample", "--out", str(tmp_path), "--full"]) == 0
    out, err = capsys.readouterr()
    assert out.split() == [str(tmp_path / name) for name in MONTH_FILES]
    assert "sample 2019-Oct.csv" in err  # the progress bar is on stderr
    for name, rows in small.items():
        assert len((tmp_path / name).read_text().splitlines()) == rows + 1


def test_cli_sample_full_and_rows_per_file_are_exclusive(tmp_path, capsys):
    assert main(["sample", "--out", str(tmp_path), "--full", "--rows-per-file", "10"]) == 2
    assert "not allowed with argument --full" in capsys.readouterr().err
    assert main(["sample", "--out", str(tmp_path), "--rows-per-file", "0"]) == 2
    assert "--rows-per-file: 0 is not a positive number" in capsys.readouterr().err
