"""Registers the fixtures (tests/fixtures/) and gives every test its tier marker.

Tiers (strict markers, pyproject.toml): a test that uses the session's PostgreSQL or Prefect server
is `integration`, one that uses the Docker engine is `docker`; modules mark `chart` (the Helm engine)
and `e2e` (kind) themselves, and tests that start servers of their own mark `integration`. Every
other test is `unit`: `make test-unit` runs those, with no database, server or Docker.
Test modules import nothing from here: shared code is in tests/helpers.py.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["fixtures.postgres", "fixtures.prefect", "fixtures.docker", "fixtures.standins"]

TIERS = ("unit", "integration", "chart", "docker", "e2e")
# a test that uses one of these fixtures (directly or through another fixture) is in that tier
SERVICE_FIXTURES = {"postgres": "integration", "prefect_server": "integration", "docker_engine": "docker"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marked = {m.name for m in item.iter_markers() if m.name in TIERS}
        needed = {tier for fixture, tier in SERVICE_FIXTURES.items() if fixture in getattr(item, "fixturenames", ())}
        if "unit" in marked and needed:
            raise pytest.UsageError(f"{item.nodeid} is marked unit but uses {', '.join(sorted(needed))} services")
        for tier in sorted(needed - marked):
            item.add_marker(tier)
        if not marked and not needed:
            item.add_marker("unit")


@pytest.fixture(autouse=True)
def _unit_tests_start_no_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test that starts a PostgreSQL or a Prefect server in this process fails, naming the tier."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} is a unit test but starts a server: mark it integration")

    from flows import localdb, localserver

    monkeypatch.setattr(localdb.LocalPostgres, "start", refuse)
    monkeypatch.setattr(localserver, "prefect_server_process", refuse)
    monkeypatch.setattr(localserver.LocalPrefectServer, "ensure_running", refuse)
