"""T3: values.schema.json rejects bad values through the real Helm engine, and the
message names the offending key."""

from __future__ import annotations

import json

import jsonschema
import pytest

from chart_render import CHART_DIR, render, render_error

pytestmark = pytest.mark.chart

# (values, the key path Helm must name, a fragment of the reason)
BAD_VALUES = {
    "unknown-top-level-key": ({"imagee": {"tag": "1"}}, "additional properties 'imagee'", "not allowed"),
    "unknown-nested-key": ({"postgresql": {"persistance": {"size": "1Gi"}}}, "/postgresql", "'persistance'"),
    "pull-policy-enum": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", "IfNotPresent"),
    "image-tag-pattern": ({"image": {"tag": "v1 beta"}}, "/image/tag", "does not match pattern"),
    "image-repository-pattern": ({"pgadmin": {"image": {"repository": "Dpage/PGAdmin"}}}, "/pgadmin/image/repository", "pattern"),
    "empty-postgres-tag": ({"postgresql": {"image": {"tag": ""}}}, "/postgresql/image/tag", "pattern"),
    "cron-schedule": ({"deployments": {"schedule": "every night"}}, "/deployments/schedule", "pattern"),
    "cron-too-few-fields": ({"deployments": {"schedule": "0 3 * *"}}, "/deployments/schedule", "pattern"),
    "timezone": ({"deployments": {"schedule": "0 3 * * *", "timezone": "Berlin time"}}, "/deployments/timezone", "pattern"),
    "cpu-quantity": ({"flowRun": {"resources": {"requests": {"cpu": "lots"}}}}, "/flowRun/resources/requests/cpu", "pattern"),
    "memory-quantity": ({"worker": {"resources": {"limits": {"memory": "1 GB"}}}}, "/worker/resources/limits/memory", "pattern"),
    "storage-size": ({"postgresql": {"persistence": {"size": "big"}}}, "/postgresql/persistence/size", "pattern"),
    "boolean-type": ({"pgadmin": {"enabled": "yes"}}, "/pgadmin/enabled", "want boolean"),
    "integer-type": ({"worker": {"replicas": "two"}}, "/worker/replicas", "want integer"),
    "port-range": ({"externalDatabase": {"port": 70000}}, "/externalDatabase/port", "maximum"),
    "negative-backoff": ({"flowRun": {"backoffLimit": -1}}, "/flowRun/backoffLimit", "minimum"),
    "pg-role-name": ({"postgresql": {"auth": {"etl": {"username": "etl; DROP ROLE x"}}}}, "/postgresql/auth/etl/username", "pattern"),
    "table-name": ({"flowRun": {"table": "Events-2024"}}, "/flowRun/table", "pattern"),
    "secret-name": ({"kaggle": {"existingSecret": "Kaggle_Creds"}}, "/kaggle/existingSecret", "pattern"),
    "pgadmin-email": ({"pgadmin": {"email": "admin"}}, "/pgadmin/email", "pattern"),
    "ui-api-url": ({"prefectServer": {"uiApiUrl": "localhost:4200"}}, "/prefectServer/uiApiUrl", "pattern"),
    "work-pool-name": ({"workPool": {"name": "my/pool"}}, "/workPool/name", "pattern"),
    "plaintext-secret-env": ({"flowRun": {"extraEnv": [{"name": "DB_PASSWORD", "value": "hunter2"}]}},
                             "/flowRun/extraEnv/0/value", "use valueFrom.secretKeyRef"),
    "env-without-value": ({"worker": {"extraEnv": [{"name": "X"}]}}, "/worker/extraEnv/0", "oneOf"),
    "access-mode-enum": ({"postgresql": {"persistence": {"accessModes": ["ReadWriteAlways"]}}},
                         "/postgresql/persistence/accessModes/0", "ReadWriteOnce"),
    "network-peer-shape": ({"networkPolicy": {"serverExtraFrom": [{"pods": {}}]}}, "/networkPolicy/serverExtraFrom/0", "'pods'"),
    "missing-flow-run-cpu-limit": ({"flowRun": {"resources": {"limits": {"cpu": None}}}}, "/flowRun/resources/limits", "cpu"),
}


def test_at_least_ten_distinct_bad_values():
    assert len({path for _, path, _ in BAD_VALUES.values()}) >= 10


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_schema_rejects_bad_value_naming_the_key(case):
    values, key_path, reason = BAD_VALUES[case]
    error = render_error(values)
    assert "values don't meet the specifications of the schema" in error, error
    assert key_path in error, f"{case}: message does not name {key_path}:\n{error}"
    assert reason in error, f"{case}: message lacks {reason!r}:\n{error}"


def _all_objects(node, path="#"):
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield path, node
        for k, v in node.items():
            yield from _all_objects(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _all_objects(v, f"{path}/{i}")


def test_schema_is_strict_everywhere():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    # Every object with declared properties forbids anything else.
    for path, node in _all_objects(schema):
        if "properties" in node and not path.endswith(("/if", "/then")):  # conditionals are partial by design
            assert node.get("additionalProperties") is False, path


def test_defaults_and_documented_overrides_pass_the_schema():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    import yaml

    jsonschema.validate(yaml.safe_load((CHART_DIR / "values.yaml").read_text()), schema)
    for ok in ({"deployments": {"schedule": "@daily"}},
               {"deployments": {"schedule": "*/15 2-4 * * MON-FRI", "timezone": "America/Argentina/Buenos_Aires"}},
               {"flowRun": {"resources": {"requests": {"cpu": 2, "memory": "1.5Gi"}}}},
               {"image": {"repository": "localhost:5000/ecommerce-etl", "tag": "dev_build.7"}},
               {"flowRun": {"extraEnv": [{"name": "KAGGLE_KEY", "valueFrom": {"secretKeyRef": {"name": "k", "key": "key"}}},
                                         {"name": "PGSSLMODE", "value": "require"}]}}):
        assert render(ok)
