"""`ecommerce-etl sample`: write the deterministic sample CSVs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flows.cli._app import EXIT_OK, Output
from flows.cli._params import option, positive_int

HELP = "write the deterministic sample CSVs"


@dataclass(frozen=True)
class Params:
    out: Path = option("--out", required=True, type=Path, help="folder to write the files into")
    rows_per_file: int = option("--rows-per-file", type=positive_int, default=20_000, group="size")
    full: bool = option(
        "--full",
        action="store_true",
        default=False,
        group="size",
        help="the real dataset's row counts: 20,692,840 rows in five files, about 2.4 GB",
    )
    seed: int = option("--seed", type=int, default=20191001)


def execute(params: Params, out: Output) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from flows.csv_spec import MONTH_FILES
    from flows.sample import FULL_ROWS, write_sample

    rows = FULL_ROWS if params.full else dict.fromkeys(MONTH_FILES, params.rows_per_file)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    with bar:
        tasks = {name: bar.add_task(f"sample {name}", total=n) for name, n in rows.items()}
        paths = write_sample(params.out, rows, params.seed, progress=lambda name, n: bar.advance(tasks[name], n))
    for path in paths:
        print(path)
    return EXIT_OK
