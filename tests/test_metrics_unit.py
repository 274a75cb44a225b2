"""T1: the exporter's pure logic: each file's latest outcome, freshness, the samples' labels."""

from __future__ import annotations

import re

from flows.metrics.data import DataSnapshot, LedgerFile, TableData
from flows.metrics.exporter import Snapshot, last_success, latest_outcomes, samples_of
from flows.metrics.families import FAMILIES
from flows.metrics.runs import DeploymentRuns, FileOutcome, RunsSnapshot, WorkPoolStatus


def _ledger(file: str, at: float, seconds: float | None = 2.0) -> LedgerFile:
    return LedgerFile(file, "sha", 100, 90, 10, at, size_bytes=1000, load_seconds=seconds)


DATA = DataSnapshot(
    schema="public",
    tables=[TableData("public", "events", [_ledger("a.csv", 100.0), _ledger("b.csv", 200.0, None)], {"x": 20})],
    database_size_bytes=5,
)


def _event(file: str, status: str, at: float, schema: str = "public", table: str = "events") -> FileOutcome:
    return FileOutcome(schema, table, file, status, at)


def test_a_files_latest_outcome_is_its_ledger_load_or_a_later_event():
    events = [
        _event("a.csv", "failed", 150.0),  # after its load: failed now
        _event("b.csv", "failed", 150.0),  # before its load: loaded since
        _event("c.csv", "failed", 10.0),  # never loaded: known from the event alone
        _event("a.csv", "failed", 999.0, schema="other"),  # another schema: not ours
    ]
    got = {(o.table, o.file): (o.status, o.at) for o in latest_outcomes(DATA, events)}
    assert got == {
        ("events", "a.csv"): ("failed", 150.0),
        ("events", "b.csv"): ("loaded", 200.0),
        ("events", "c.csv"): ("failed", 10.0),
    }


def test_freshness_counts_unchanged_files_but_not_failures():
    outcomes = latest_outcomes(DATA, [_event("a.csv", "skipped", 500.0), _event("b.csv", "failed", 900.0)])
    assert last_success(DATA, outcomes) == {("public", "events"): 500.0}
    only_failures = latest_outcomes(DATA, [_event("b.csv", "failed", 900.0)])
    assert last_success(DATA, only_failures) == {("public", "events"): 200.0}  # the ledger's latest load


def test_samples_carry_only_catalogued_labels_and_skip_unknown_values():
    runs = RunsSnapshot(
        deployments=[DeploymentRuns("ecommerce-etl/sample", by_state={("FAILED", "Failed"): 2}, last_duration=3.0)],
        work_pools=[WorkPoolStatus("kubernetes", True, {"online": 1, "offline": 0}, 42.0)],
        file_outcomes=[_event("a.csv", "skipped", 500.0)],
    )
    samples = samples_of(Snapshot(DATA, runs, {"database": True, "prefect": True}, {"database": 0.1, "prefect": 0.2}))
    for name, found in samples.items():
        assert re.fullmatch(r"ecommerce_etl_[a-z_]+", name) and name in FAMILIES
        for labels, _ in found:
            assert sorted(labels) == sorted(FAMILIES[name][1]), (name, labels)
    by_file = {s[0]["file"]: s[1] for s in samples["ecommerce_etl_file_load_rows_per_second"]}
    assert by_file == {"a.csv": 50.0}  # b.csv's duration is unknown (an older ledger): no rate
    waiting = {s[0]["state"]: s[1] for s in samples["ecommerce_etl_flow_runs_waiting_oldest_seconds"]}
    assert waiting == {"Late": 0.0, "AwaitingConcurrencySlot": 0.0, "Pending": 0.0}
    assert "ecommerce_etl_flow_run_last_success_timestamp_seconds" not in samples  # never completed: no series


def test_a_source_down_has_no_figures_only_its_up_series():
    samples = samples_of(Snapshot(None, None, {"database": False, "prefect": False}, {"database": 0.0, "prefect": 0.0}))
    assert set(samples) == {"ecommerce_etl_exporter_source_up", "ecommerce_etl_exporter_read_seconds"}
    assert {s[0]["source"]: s[1] for s in samples["ecommerce_etl_exporter_source_up"]} == {"database": 0, "prefect": 0}
