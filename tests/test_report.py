"""T1: what a run reports (artifacts, JSON, CLI table), its events, and where the CLI sends a run."""

from __future__ import annotations

import pytest

from flows.errors import ConfigError
from flows.events import QUARANTINE_HIGH, file_event_names, file_resource
from flows.load import FileResult, summarise_quarantine
from flows.localserver import configured_api_url
from flows.report import SUMMARY_COLUMNS, RunReport
from flows.settings import get_settings


def _loaded(file="2019-Oct.csv", read=10, quarantined=0, **extra) -> FileResult:
    return FileResult(file=file, status="loaded", rows_read=read, rows_loaded=read - quarantined,
                      rows_quarantined=quarantined, seconds=2.0, **extra)


def test_one_column_list_feeds_the_artifact_and_the_table():
    report = RunReport(files=[_loaded(), FileResult(file="b.csv", status="failed", error="wrong header")])
    rows = report.summary_rows()
    assert [list(r) for r in rows] == [[title for title, _ in SUMMARY_COLUMNS]] * 2
    assert rows[0]["rows/s"] == 5 and rows[1]["rows/s"] == 0 and rows[1]["error"] == "wrong header"
    assert report.totals == {"rows_read": 10, "rows_loaded": 10, "rows_quarantined": 0, "rows_skipped": 0}
    assert [f.status for f in report.failed] == ["failed"]


def test_each_total_stands_under_its_own_column():
    report = RunReport(files=[_loaded(read=10, quarantined=3), _loaded(file="b.csv", read=5)])
    total = report.total_row()
    assert list(total) == [title for title, _ in SUMMARY_COLUMNS]
    assert total == {**dict.fromkeys(total, ""), "file": "total", "rows read": 15, "rows loaded": 12,
                     "rows quarantined": 3, "rows skipped": 0}


def test_results_survive_their_json_form():
    result = _loaded(quarantined=2, quarantine_by_reason={"price: value is not a finite decimal number": 2},
                     quarantine_examples=[{"line": 3, "reason": "r", "raw": "x"}], load_path="careful")
    as_json = result.as_dict()
    assert as_json["rows_per_second"] == 5.0 and as_json["load_path"] == "careful"
    assert FileResult.model_validate(as_json) == result  # rows_per_second (derived) is dropped and recomputed
    assert FileResult.model_validate_json(result.model_dump_json()) == result


@pytest.mark.parametrize("field, value", [("status", "done"), ("load_path", "checked")])
def test_a_result_names_only_known_statuses_and_load_paths(field, value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        FileResult.model_validate({"file": "a.csv", "status": "loaded", field: value})


def test_quarantine_report_counts_each_reason_and_shows_example_lines():
    from flows.load import Quarantined

    rows = [Quarantined(9, "bad,|pipe`tick", 'price: "x" is not a finite decimal number'),
            Quarantined(4, "a,b", "expected 9 fields, found 2")]
    rows += [Quarantined(n, f"row {n}", f'price: "{n}" is not a finite decimal number') for n in (20, 30, 40)]
    by_reason, examples = summarise_quarantine(rows)
    assert by_reason == {"price: value is not a finite decimal number": 4, "expected 9 fields": 1}  # any count
    assert [e["line"] for e in examples] == [4, 9, 20, 30]  # first three of each reason, in line order
    report = RunReport(files=[_loaded(read=100, quarantined=5, quarantine_by_reason=by_reason,
                                      quarantine_examples=examples)], source="local", table="public.events")
    text = report.quarantine_markdown()
    assert "## 2019-Oct.csv: 5 of 100 rows quarantined" in text
    assert "| price: value is not a finite decimal number | 4 |" in text
    assert "| 9 | price: \"x\" is not a finite decimal number | `` bad,\\|pipe`tick `` |" in text
    assert "Nothing quarantined" not in text


def test_quarantine_report_says_nothing_quarantined():
    text = RunReport(files=[_loaded(), FileResult(file="x.csv", status="skipped")], source="sample").quarantine_markdown()
    assert "Nothing quarantined: every row read was loaded." in text and "## x.csv: skipped" in text


@pytest.mark.parametrize("result, ratio, names", [
    ({"status": "loaded", "rows_read": 100, "rows_quarantined": 11}, 0.1, ["ecommerce.file.loaded", QUARANTINE_HIGH]),
    ({"status": "loaded", "rows_read": 100, "rows_quarantined": 10}, 0.1, ["ecommerce.file.loaded"]),
    ({"status": "loaded", "rows_read": 100, "rows_quarantined": 90}, None, ["ecommerce.file.loaded"]),
    ({"status": "skipped", "rows_read": 0, "rows_quarantined": 0}, 0.0, ["ecommerce.file.skipped"]),
    ({"status": "failed", "rows_read": 0, "rows_quarantined": 0}, 0.0, ["ecommerce.file.failed"]),
])
def test_file_events(result, ratio, names):
    assert file_event_names(FileResult(file="a.csv", **result), ratio) == names


def test_file_resource_names_the_table_and_the_file():
    assert file_resource("public", "events", "2019-Oct.csv") == {
        "prefect.resource.id": "ecommerce.file.public.events.2019-Oct.csv", "prefect.resource.name": "2019-Oct.csv",
        "ecommerce.table": "public.events", "ecommerce.file": "2019-Oct.csv"}


def test_a_bad_setting_names_its_variable_and_hides_secrets(monkeypatch):
    monkeypatch.setenv("ETL_PREFECT_PORT", "70000")
    with pytest.raises(ConfigError, match=r"ETL_PREFECT_PORT: .*65535 \(got '70000'\)"):
        get_settings()
    monkeypatch.delenv("ETL_PREFECT_PORT")
    monkeypatch.setenv("ETL_ALERT_QUARANTINE_RATIO", "2")
    with pytest.raises(ConfigError, match="ETL_ALERT_QUARANTINE_RATIO"):
        get_settings()


def test_the_users_prefect_server_comes_from_the_environment_or_the_active_profile(tmp_path):
    profiles = tmp_path / "profiles.toml"
    profiles.write_text('active = "team"\n[profiles.team]\nPREFECT_API_URL = "http://team:4200/api"\n'
                        '[profiles.other]\nPREFECT_API_URL = "http://other:4200/api"\n')
    assert configured_api_url({"PREFECT_API_URL": "http://env/api", "PREFECT_HOME": str(tmp_path)}) == "http://env/api"
    assert configured_api_url({"PREFECT_HOME": str(tmp_path)}) == "http://team:4200/api"
    assert configured_api_url({"PREFECT_HOME": str(tmp_path), "PREFECT_PROFILE": "other"}) == "http://other:4200/api"
    assert configured_api_url({"PREFECT_HOME": str(tmp_path / "empty")}) is None
