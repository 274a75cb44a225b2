"""A deterministic, seeded stand-in for the Kaggle dataset: same files, schema and distributions.

A month is generated from its own seed (`seed + its index in MONTH_FILES`), so one month written alone has
the same bytes as in the five-file sample. Months larger than `chunk_rows` (the full-scale sample) are made
in chunks, each a slice of the month's time range, so memory stays bounded whatever the row count.
"""

from __future__ import annotations

import binascii
import calendar
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from flows.csv_spec import CSV_HEADER, EVENT_TYPES, MONTH_FILES

# Shares measured on the real dataset.
EVENT_TYPE_SHARES = (0.467, 0.279, 0.192, 0.062)
BRAND_NULL_SHARE = 0.42
CATEGORY_CODE_NULL_SHARE = 0.98
SESSION_NULL_SHARE = 0.0002
DUPLICATE_SHARE = 0.05
NON_POSITIVE_PRICE_SHARE = 0.0005

BRANDS = (
    "runail",
    "irisk",
    "masura",
    "grattol",
    "bpw.style",
    "ingarden",
    "estel",
    "kapous",
    "jessnail",
    "uno",
    "concept",
    "freedecor",
    "italwax",
    "f.o.x",
    "haruyama",
    "entity",
    "domix",
    "lianail",
)
CATEGORY_CODES = (
    "appliances.environment.vacuum",
    "furniture.bathroom.bath",
    "stationery.cartrige",
    "apparel.glove",
    "accessories.bag",
    "furniture.living_room.cabinet",
)

# Rows per file in the real dataset (20,692,840 in all): `ecommerce-etl sample --full`.
FULL_ROWS = {
    "2019-Oct.csv": 4_102_283,
    "2019-Nov.csv": 4_635_837,
    "2019-Dec.csv": 3_533_286,
    "2020-Jan.csv": 4_264_752,
    "2020-Feb.csv": 4_156_682,
}
# Larger months are generated in chunks of at most this many rows: the process peaks at ~280 MB (measured;
# 500,000-row chunks: ~520 MB) at the same speed, about 3.5 s per million rows on one core.
CHUNK_ROWS = 100_000

Progress = Callable[[str, int], None]  # (file name, rows just written)


def _month_start(file_name: str) -> datetime:
    return datetime.strptime(file_name.removesuffix(".csv"), "%Y-%b").replace(tzinfo=UTC)


class _Pools:
    """The values rows pick from (products, categories, users, sessions), each drawn on first use.

    A month made in one piece draws them from its own generator, interleaved with the rows, exactly as the
    sample always has (its bytes depend on that order). A chunked month draws them once from a generator of
    their own and shares them between chunks, so users and sessions recur across the whole month.
    """

    def __init__(self, rng: np.random.Generator, unique: int):
        self._rng, self._unique = rng, unique
        self._drawn: dict[str, np.ndarray] = {}

    def _get(self, name: str, draw: Callable[[np.random.Generator, int], np.ndarray]) -> np.ndarray:
        if name not in self._drawn:
            self._drawn[name] = draw(self._rng, self._unique)
        return self._drawn[name]

    def products(self) -> np.ndarray:
        return self._get("products", lambda rng, n: rng.integers(3752, 5_900_000, size=max(n // 20, 10)))

    def categories(self) -> np.ndarray:
        return self._get(
            "categories", lambda rng, n: rng.integers(1_487_580_004_807_000_000, 2_242_903_426_784_559_104, size=200)
        )

    def users(self) -> np.ndarray:
        return self._get("users", lambda rng, n: rng.integers(4_661_182, 622_090_237, size=max(n // 8, 10)))

    def sessions(self) -> np.ndarray:
        """Raw uuid bytes, shape (n, 16); only the drawn ones are formatted (see _format_uuids)."""
        return self._get("sessions", lambda rng, n: rng.integers(0, 256, size=(max(n // 4, 10), 16), dtype=np.uint8))


def _unique_rows(rows: int) -> int:
    return rows - int(rows * DUPLICATE_SHARE)


def _events(
    rng: np.random.Generator, pools: _Pools, start: datetime, window: tuple[int, int], rows: int
) -> pd.DataFrame:
    """`rows` events with times in `window` (seconds after `start`), ~5 % of them exact duplicates."""
    unique = _unique_rows(rows)
    # duplicates repeat a random earlier row right after it, as in the real files
    source_index = np.sort(np.concatenate([np.arange(unique), rng.integers(0, unique, rows - unique)]))

    offsets = np.sort(rng.integers(window[0], window[1], unique))
    times = np.datetime64(start.replace(tzinfo=None), "s") + offsets.astype("timedelta64[s]")
    event_time = np.char.add(np.char.replace(np.datetime_as_string(times, unit="s"), "T", " "), " UTC")

    products = pools.products()
    product_index = rng.integers(0, len(products), unique)
    categories = pools.categories()
    price = np.round(rng.lognormal(1.6, 1.0, unique), 2)
    non_positive = rng.random(unique) < NON_POSITIVE_PRICE_SHARE
    price[non_positive] = np.where(
        rng.random(non_positive.sum()) < 0.5, 0.0, -np.round(rng.uniform(1, 80, non_positive.sum()), 2)
    )

    users = pools.users()
    user_index = rng.integers(0, len(users), unique)
    sessions = pools.sessions()
    session = _format_uuids(sessions[rng.integers(0, len(sessions), unique)])
    session[rng.random(unique) < SESSION_NULL_SHARE] = None

    brand = np.array(BRANDS, dtype=object)[rng.integers(0, len(BRANDS), unique)]
    brand[rng.random(unique) < BRAND_NULL_SHARE] = None
    category_code = np.array(CATEGORY_CODES, dtype=object)[rng.integers(0, len(CATEGORY_CODES), unique)]
    category_code[rng.random(unique) < CATEGORY_CODE_NULL_SHARE] = None

    frame = pd.DataFrame(
        {
            "event_time": event_time,
            "event_type": np.array(EVENT_TYPES)[rng.choice(len(EVENT_TYPES), unique, p=EVENT_TYPE_SHARES)],
            "product_id": products[product_index],
            "category_id": categories[product_index % len(categories)],
            "category_code": category_code,
            "brand": brand,
            "price": price,
            "user_id": users[user_index],
            "user_session": session,
        },
        columns=list(CSV_HEADER),
    )
    return frame.iloc[source_index].reset_index(drop=True)


def _format_uuids(raw: np.ndarray) -> np.ndarray:
    """Version-4 uuid strings of (n, 16) random bytes, as `str(uuid.UUID(bytes=..., version=4))` gives them,
    vectorised; returns an object array (so None can mark a missing session)."""
    b = raw.copy()
    b[:, 6] = (b[:, 6] & 0x0F) | 0x40  # version 4
    b[:, 8] = (b[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    hexed = np.frombuffer(binascii.hexlify(b.tobytes()), dtype=np.uint8).reshape(-1, 32)
    out = np.full((len(b), 36), ord("-"), dtype=np.uint8)
    for dst, src in (
        (slice(0, 8), slice(0, 8)),
        (slice(9, 13), slice(8, 12)),
        (slice(14, 18), slice(12, 16)),
        (slice(19, 23), slice(16, 20)),
        (slice(24, 36), slice(20, 32)),
    ):
        out[:, dst] = hexed[:, src]
    return out.view("S36").ravel().astype("U36").astype(object)


def generate_month(file_name: str, rows: int, seed: int) -> pd.DataFrame:
    """One month of events in one piece; rows include the dataset's ~5 % exact duplicates."""
    rng = np.random.default_rng(seed)
    start = _month_start(file_name)
    seconds_in_month = calendar.monthrange(start.year, start.month)[1] * 86400
    return _events(rng, _Pools(rng, _unique_rows(rows)), start, (0, seconds_in_month), rows)


def generate_month_chunks(file_name: str, rows: int, seed: int, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """One month as consecutive frames of at most `chunk_rows` rows, in time order. A month that fits in one
    chunk is exactly `generate_month`; a larger one gets each chunk its own slice of the month and its own
    generator, with the value pools shared."""
    if rows <= chunk_rows:
        yield generate_month(file_name, rows, seed)
        return
    start = _month_start(file_name)
    seconds_in_month = calendar.monthrange(start.year, start.month)[1] * 86400
    pools = _Pools(np.random.default_rng([seed, 0]), _unique_rows(rows))
    chunks = -(-rows // chunk_rows)
    bounds = [rows * i // chunks for i in range(chunks + 1)]  # even sizes, summing to rows exactly
    for i in range(chunks):
        window = (seconds_in_month * bounds[i] // rows, seconds_in_month * bounds[i + 1] // rows)
        yield _events(np.random.default_rng([seed, 1, i]), pools, start, window, bounds[i + 1] - bounds[i])


def month_seed(seed: int, file_name: str, position: int) -> int:
    """A month's own seed: by its place in the dataset, so it does not depend on which months are written."""
    return seed + (MONTH_FILES.index(file_name) if file_name in MONTH_FILES else position)


def write_sample(
    out_dir: Path,
    rows_per_file: int | Mapping[str, int] = 20_000,
    seed: int = 20191001,
    files: tuple[str, ...] = MONTH_FILES,
    *,
    chunk_rows: int = CHUNK_ROWS,
    progress: Progress | None = None,
) -> list[Path]:
    """Write the monthly files (deterministic for a seed); returns their paths.

    A month's seed comes from its place among the dataset's five months (month_seed), so one month written
    alone (a `load-file` Job fetching only its file) has the same bytes as in the whole sample.
    `rows_per_file` is one count for every file or a count per file name (FULL_ROWS for the real sizes).
    `progress(file, rows)` is called after each chunk written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for position, name in enumerate(files):
        rows = rows_per_file[name] if isinstance(rows_per_file, Mapping) else rows_per_file
        target = out_dir / name
        partial = target.with_name(target.name + ".partial")
        with partial.open("wb") as out:
            out.write((",".join(CSV_HEADER) + "\n").encode())  # unquoted, like the real files
            for frame in generate_month_chunks(name, rows, month_seed(seed, name, position), chunk_rows):
                table = pa.Table.from_pandas(frame, preserve_index=False)
                pacsv.write_csv(
                    table, out, write_options=pacsv.WriteOptions(include_header=False, quoting_style="none")
                )
                if progress:
                    progress(name, len(frame))
        partial.replace(target)
        written.append(target)
    return written
