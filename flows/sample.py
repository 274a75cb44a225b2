"""A deterministic, seeded stand-in for the Kaggle dataset: same files, schema and distributions."""

from __future__ import annotations

import calendar
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from flows.schema import CSV_HEADER, EVENT_TYPES, MONTH_FILES

# Shares measured on the real dataset.
EVENT_TYPE_SHARES = (0.467, 0.279, 0.192, 0.062)
BRAND_NULL_SHARE = 0.42
CATEGORY_CODE_NULL_SHARE = 0.98
SESSION_NULL_SHARE = 0.0002
DUPLICATE_SHARE = 0.05
NON_POSITIVE_PRICE_SHARE = 0.0005

BRANDS = ("runail", "irisk", "masura", "grattol", "bpw.style", "ingarden", "estel", "kapous", "jessnail",
          "uno", "concept", "freedecor", "italwax", "f.o.x", "haruyama", "entity", "domix", "lianail")
CATEGORY_CODES = ("appliances.environment.vacuum", "furniture.bathroom.bath", "stationery.cartrige",
                  "apparel.glove", "accessories.bag", "furniture.living_room.cabinet")


def _month_start(file_name: str) -> datetime:
    return datetime.strptime(file_name.removesuffix(".csv"), "%Y-%b").replace(tzinfo=timezone.utc)


def generate_month(file_name: str, rows: int, seed: int) -> pd.DataFrame:
    """One month of events; rows include the dataset's ~5 % exact duplicates."""
    rng = np.random.default_rng(seed)
    start = _month_start(file_name)
    seconds_in_month = calendar.monthrange(start.year, start.month)[1] * 86400
    unique = rows - int(rows * DUPLICATE_SHARE)
    # duplicates repeat a random earlier row right after it, as in the real files
    source_index = np.sort(np.concatenate([np.arange(unique), rng.integers(0, unique, rows - unique)]))

    offsets = np.sort(rng.integers(0, seconds_in_month, unique))
    times = np.datetime64(start.replace(tzinfo=None), "s") + offsets.astype("timedelta64[s]")
    event_time = np.char.add(np.char.replace(np.datetime_as_string(times, unit="s"), "T", " "), " UTC")

    products = rng.integers(3752, 5_900_000, size=max(unique // 20, 10))
    product_index = rng.integers(0, len(products), unique)
    categories = rng.integers(1_487_580_004_807_000_000, 2_242_903_426_784_559_104, size=200)
    price = np.round(rng.lognormal(1.6, 1.0, unique), 2)
    non_positive = rng.random(unique) < NON_POSITIVE_PRICE_SHARE
    price[non_positive] = np.where(rng.random(non_positive.sum()) < 0.5, 0.0, -np.round(rng.uniform(1, 80, non_positive.sum()), 2))

    users = rng.integers(4_661_182, 622_090_237, size=max(unique // 8, 10))
    user_index = rng.integers(0, len(users), unique)
    session_pool = _uuid_pool(rng, max(unique // 4, 10))
    session = session_pool[rng.integers(0, len(session_pool), unique)].astype(object)
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


def _uuid_pool(rng: np.random.Generator, size: int) -> np.ndarray:
    raw = rng.integers(0, 256, size=(size, 16), dtype=np.uint8)
    return np.array([str(uuid.UUID(bytes=r.tobytes(), version=4)) for r in raw], dtype=object)


def write_sample(out_dir: Path, rows_per_file: int = 20_000, seed: int = 20191001,
                 files: tuple[str, ...] = MONTH_FILES) -> list[Path]:
    """Write the monthly files (the five by default), deterministic for a seed; returns their paths.

    A month's seed comes from its place among the dataset's five months, so one month written
    alone (a `load-file` Job fetching only its file) has the same bytes as in the whole sample.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for position, name in enumerate(files):
        index = MONTH_FILES.index(name) if name in MONTH_FILES else position
        frame = generate_month(name, rows_per_file, seed + index)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        target = out_dir / name
        partial = target.with_name(target.name + ".partial")
        with partial.open("wb") as out:
            out.write((",".join(CSV_HEADER) + "\n").encode())  # unquoted, like the real files
            pacsv.write_csv(table, out, write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"))
        partial.replace(target)
        written.append(target)
    return written
