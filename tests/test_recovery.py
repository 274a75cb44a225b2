"""T1: the self-healing decisions (flows/recovery.py) and the chaos fault hook (flows/faulthook.py),
without any server: how many re-runs a crashed run gets and after which delay, which API errors a
wait rides out and for how long, and that the fault hook does nothing unless enabled."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prefect.exceptions import PrefectHTTPStatusError
from prefect.states import AwaitingRetry, Completed, Crashed, Pending, Running

from flows import faulthook, recovery
from helpers import REPO


def _history(*states):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i, state in enumerate(states):
        state.timestamp = start + timedelta(seconds=i)
    return list(reversed(states))  # any order: the verdict sorts by time


def _ours():
    """An AwaitingRetry set by flows/recovery.py (a re-run after a crash)."""
    return AwaitingRetry(message=f"{recovery.MARK}: the run crashed (x); re-run 1 of 2")


def test_verdict_counts_the_crashes_of_the_runs_own_history():
    policy = recovery.RetryPolicy(retries=2, delay_seconds=10, max_delay_seconds=25)
    first = recovery.verdict(_history(Pending(), Running(), Crashed(message="pod OOMKilled")), policy)
    assert (first.retry, first.crashes, first.delay, first.reason) == (True, 1, 10, "pod OOMKilled")
    # a SIGTERM reschedule (AwaitingRetry without a crash) is not a crash
    second = recovery.verdict(
        _history(Pending(), Running(), Crashed(message="a"), _ours(), Pending(), Running(), AwaitingRetry(),
                 Pending(), Running(), Crashed(message="b\n  second")),
        policy,
    )
    assert (second.retry, second.crashes, second.delay, second.reason) == (True, 2, 20, "b second")
    third = recovery.verdict(
        _history(Running(), Crashed(message="a"), _ours(), Running(), Crashed(message="b"), _ours(), Running(),
                 Crashed()),
        policy,
    )
    assert (third.retry, third.crashes, third.delay, third.reason) == (False, 3, 25, "no message")
    assert "crashed 3 time(s)" in recovery.exhausted_text(third, "flowRun.fileRetries")
    assert recovery.verdict(_history(Running(), Completed()), policy).crashes == 0
    none = recovery.RetryPolicy(retries=0)
    assert recovery.verdict(_history(Crashed()), none).retry is False


def test_a_crash_that_cut_short_prefects_own_reschedule_is_rerun_at_once_and_not_counted():
    """A deleted pod: its supervisor reschedules the run (AwaitingRetry), then the observer reports
    the failed Job as Crashed over it. That is re-run without delay and without using a retry; a crash
    after one of our own re-runs (AwaitingRetry with our mark) counts."""
    policy = recovery.RetryPolicy(retries=1, delay_seconds=10)
    cut = recovery.verdict(
        _history(Running(), AwaitingRetry(), Crashed(message="No active or succeeded pods found for any job")), policy
    )
    assert (cut.retry, cut.uncounted, cut.crashes, cut.delay) == (True, True, 0, 0)
    ours = _ours()
    after_ours = recovery.verdict(
        _history(Pending(), Crashed(message="x"), ours, Pending(), Running(), Crashed(message="y")), policy
    )
    assert (after_ours.retry, after_ours.uncounted, after_ours.crashes) == (False, False, 2)
    # evicted again and again: each cut-short reschedule is re-run, the real crashes still count
    many = recovery.verdict(
        _history(Pending(), Running(), AwaitingRetry(), Crashed(), ours, Pending(), Running(), AwaitingRetry(),
                 Crashed()),
        policy,
    )
    assert (many.retry, many.crashes) == (True, 0)
    assert cut.kind == "rescheduled" and "does not count" in recovery.rerun_text(cut, "flowRun.fileRetries")


def test_a_second_report_of_the_same_crash_is_not_a_second_crash():
    """The supervisor reports the engine's death, then the process worker (or the observer) reports it
    again, after the run was set back to AwaitingRetry or even onto the next attempt while it is still
    Pending: no attempt ran (Running) between the two."""
    policy = recovery.RetryPolicy(retries=1, delay_seconds=10)
    twice = recovery.verdict(
        _history(Pending(), Running(), Crashed(message="exit -9"), _ours(), Crashed(message="exit -9 again")), policy
    )
    assert (twice.retry, twice.kind, twice.crashes, twice.delay) == (True, "repeat", 1, 10)
    assert "second report" in recovery.rerun_text(twice, "flowRun.fileRetries")
    onto_next = recovery.verdict(_history(Running(), Crashed(), _ours(), Pending(), Crashed()), policy)
    assert (onto_next.retry, onto_next.kind, onto_next.crashes) == (True, "repeat", 1)
    # a crash of an attempt that ran counts
    ran = recovery.verdict(_history(Pending(), Running(), Crashed(), _ours(), Pending(), Running(), Crashed()), policy)
    assert (ran.retry, ran.kind, ran.crashes) == (False, "crash", 2)


def test_uncounted_reports_are_capped_so_nothing_loops_forever():
    """A pod that dies before its run starts, again and again: each report after the first is a
    "repeat", but at most 2 x (retries + 1) + 2 reports in all."""
    policy = recovery.RetryPolicy(retries=1, delay_seconds=10)
    states = [Pending(), Crashed()]
    for _ in range(5):
        states += [_ours(), Pending(), Crashed()]
    found = recovery.verdict(_history(*states), policy)
    assert (found.kind, found.crashes, found.reports, found.retry) == ("repeat", 1, 6, True)
    states += [_ours(), Pending(), Crashed()]
    assert recovery.verdict(_history(*states), policy).retry is False


def test_delays_double_up_to_the_maximum():
    policy = recovery.RetryPolicy(retries=5, delay_seconds=3, max_delay_seconds=20)
    assert [policy.delay(n) for n in range(1, 6)] == [3, 6, 12, 20, 20]


def _status_error(code: int) -> PrefectHTTPStatusError:
    request = httpx.Request("GET", "http://x/api/flow_runs/filter")
    return PrefectHTTPStatusError.from_httpx_error(
        httpx.HTTPStatusError("x", request=request, response=httpx.Response(code, request=request))
    )


def test_transient_errors_are_outages_and_the_rest_are_not():
    assert recovery.transient(_status_error(500)) and recovery.transient(_status_error(503))
    assert recovery.transient(httpx.ConnectError("refused")) and recovery.transient(httpx.ReadTimeout("slow"))
    assert recovery.transient(ConnectionRefusedError())
    assert not recovery.transient(_status_error(404)) and not recovery.transient(_status_error(422))
    assert not recovery.transient(ValueError("a bug"))


def test_api_outage_rides_out_transient_errors_then_gives_up(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(recovery.time, "sleep", slept.append)
    clock = [0.0]
    monkeypatch.setattr(recovery.time, "monotonic", lambda: clock[0])
    answers = [httpx.ConnectError("refused"), _status_error(500), _status_error(503), "runs"]

    def call():
        clock[0] += 5
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    outage = recovery.ApiOutage(seconds=60)
    assert outage.call(call) == "runs"
    assert slept == [2.0, 4.0, 8.0] and outage.since is None

    with pytest.raises(ValueError):  # not an outage: raised at once
        outage.call(lambda: (_ for _ in ()).throw(ValueError("bug")))

    def down():
        clock[0] += 20
        raise httpx.ConnectError("refused")

    with pytest.raises(httpx.ConnectError):
        recovery.ApiOutage(seconds=60).call(down)


def test_fault_hook_is_absent_unless_enabled(monkeypatch, tmp_path):
    monkeypatch.delenv(faulthook.ENV, raising=False)
    assert faulthook.checkpoint("2019-Oct.csv") is None
    monkeypatch.setenv(faulthook.ENV, str(tmp_path))
    assert callable(faulthook.checkpoint("2019-Oct.csv"))


def _copying_process(folder: Path, file: str) -> subprocess.CompletedProcess:
    """A process that is 'COPYing' `file` for 1.5 s with the hook enabled on `folder`."""
    code = textwrap.dedent(f"""
        import os, time
        os.environ[{faulthook.ENV!r}] = {str(folder)!r}
        from flows import faulthook
        hook = faulthook.checkpoint({file!r})
        hook("check-ledger", "before")
        hook("stage-fast.copy", "before"); hook("stage-fast.copy", "before")
        time.sleep(1.5)
        hook("stage-fast.copy", "after"); hook("stage-fast.copy", "after")
        print("survived")
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_fault_hook_kills_mid_copy_only_the_named_file_and_only_once(tmp_path):
    (tmp_path / "kill").write_text("2019-Nov.csv")
    other = _copying_process(tmp_path, "2019-Oct.csv")
    assert other.returncode == 0 and "survived" in other.stdout  # not its file
    hit = _copying_process(tmp_path, "2019-Nov.csv")
    assert hit.returncode == -9 and "survived" not in hit.stdout
    assert not (tmp_path / "kill").exists() and (tmp_path / "kill.fired").exists()
    again = _copying_process(tmp_path, "2019-Nov.csv")  # one-shot: the retry loads
    assert again.returncode == 0

    (tmp_path / "kill-every").write_text("")
    assert _copying_process(tmp_path, "2019-Dec.csv").returncode == -9
    assert _copying_process(tmp_path, "2019-Dec.csv").returncode == -9  # every attempt


def test_fault_hook_holds_the_named_files_copy_while_the_trigger_exists(monkeypatch, tmp_path):
    import threading
    import time

    monkeypatch.setenv(faulthook.ENV, str(tmp_path))
    (tmp_path / faulthook.HOLD).write_text("2019-Nov.csv")
    faulthook.checkpoint("2019-Oct.csv")("stage-fast.copy", "before")  # not its file: passes at once
    faulthook.checkpoint("2019-Oct.csv")("stage-fast.copy", "after")
    copied = threading.Event()

    def load_nov():
        hook = faulthook.checkpoint("2019-Nov.csv")
        hook("stage-careful.copy", "before")
        copied.set()
        hook("stage-careful.copy", "after")

    loader = threading.Thread(target=load_nov, daemon=True)
    loader.start()
    assert not copied.wait(1.0), "the held file's COPY began"
    released = time.monotonic()
    (tmp_path / faulthook.HOLD).unlink()
    assert copied.wait(5), "the COPY stayed held after the trigger was removed"
    assert time.monotonic() - released < 1
    loader.join(5)


def test_the_recovery_group_is_read_from_settings_under_its_variables(monkeypatch, tmp_path):
    from flows.settings import Settings

    monkeypatch.chdir(tmp_path)  # no .env here
    for name in Settings.model_fields:
        if name.startswith(("file_", "pipeline_", "retry_", "api_", "recovery_")):
            monkeypatch.delenv(str(Settings.model_fields[name].validation_alias), raising=False)
    defaults = Settings().recovery
    assert (defaults.file_retries, defaults.pipeline_retries, defaults.api_outage_seconds) == (2, 1, 900)
    assert (defaults.retry_delay_seconds, defaults.retry_max_delay_seconds, defaults.heartbeat_file) == (10, 300, None)
    monkeypatch.setenv("ETL_FILE_RETRIES", "4")
    monkeypatch.setenv("ETL_PIPELINE_RETRIES", "3")
    monkeypatch.setenv("ETL_RETRY_DELAY_SECONDS", "20")
    monkeypatch.setenv("ETL_API_OUTAGE_SECONDS", "60")
    monkeypatch.setenv("ETL_RECOVERY_MAX_AGE_MINUTES", "5")
    monkeypatch.setenv("ETL_RECOVERY_POLL_SECONDS", "2")
    monkeypatch.setenv("ETL_RECOVERY_HEARTBEAT_FILE", "/tmp/alive")
    got = Settings().recovery
    assert (got.file_retries, got.pipeline_retries, got.retry_delay_seconds, got.api_outage_seconds) == (4, 3, 20, 60)
    assert (got.max_age_minutes, got.poll_seconds, got.heartbeat_file) == (5, 2, Path("/tmp/alive"))


@pytest.mark.parametrize("variable, value", [("ETL_FILE_RETRIES", "11"), ("ETL_RECOVERY_POLL_SECONDS", "0")])
def test_recover_names_a_bad_recovery_setting_and_exits_2(variable, value, tmp_path):
    from helpers import cli

    done = cli("recover", "--once", env={variable: value}, timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"invalid setting: {variable}: " in done.stderr and f"(got {value!r})" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_the_spent_message_reads_as_before_for_a_file_and_a_pipeline_run():
    found = recovery.Verdict(crashes=3, retries=2, delay=0, reason="OOMKilled")
    assert f"its load-file run {recovery.exhausted_text(found, 'flowRun.fileRetries')}" == (
        "its load-file run crashed 3 time(s), and flowRun.fileRetries=2 re-runs are spent (last crash: OOMKilled)"
    )
    assert recovery.exhausted_text(found, "flowRun.pipelineRetries") == (
        "crashed 3 time(s), and flowRun.pipelineRetries=2 re-runs are spent (last crash: OOMKilled)"
    )
