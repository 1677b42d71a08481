"""The API behaves as its OpenAPI schema says: schemathesis generates valid and invalid
requests for every operation of /api/schema/ and checks every answer (no server error,
documented status codes and content types, bodies matching the response schemas, valid data
accepted, invalid data refused).

Every example runs against the same small organization, as a Full Administrator with an API
token, inside a transaction rolled back afterwards, so a DELETE or a bulk action of one
example leaves the next its objects. SMTPADMIN_SOAK=1 (``make soak``) runs many more
examples per operation.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, settings

from smtpadmin.wsgi import application
from tests.smtpadmin.api_world import ApiWorld, make_api_world

SOAK = os.environ.get("SMTPADMIN_SOAK", "") == "1"
EXAMPLES = 300 if SOAK else 15

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)

#: Requests made and answers per status code, for the summary at the end of the run.
TALLY: Counter[str] = Counter()


@pytest.fixture
def api_world(db: Any, tmp_path: Path) -> Iterator[ApiWorld]:
    # Django's own test client does the same: the WSGI handler would otherwise close the
    # connection that holds the test's transaction after every request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield make_api_world(tmp_path)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


_PATH_PARAMETER = re.compile(r"/([a-z-]+)/\{(\w+)\}")


def point_at_the_world(case: Any, world: ApiWorld) -> None:
    """Ids drawn as even numbers stand for the world's object of that resource; odd ones stay
    as drawn (mostly unknown: 404). Ids that are not numbers are left to be refused."""
    resources = {name: resource for resource, name in _PATH_PARAMETER.findall(case.path)}
    for name, value in (case.path_parameters or {}).items():
        if isinstance(value, int) and not isinstance(value, bool) and value % 2 == 0:
            resource = resources.get(name, "")
            if resource in world.ids:
                case.path_parameters[name] = world.ids[resource]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_answers_as_its_schema_says(case: Any, api_world: ApiWorld) -> None:
    point_at_the_world(case, api_world)
    TALLY["examples"] += 1
    with transaction.atomic():
        # The checks may send more requests (an unsupported method, say): same transaction.
        try:
            case.call_and_validate(headers=api_world.headers)
        finally:
            transaction.set_rollback(True)


@schema.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    TALLY["requests"] += 1
    TALLY[f"status {response.status_code}"] += 1


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    TALLY.clear()
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        counts = ", ".join(f"{key}: {n}" for key, n in sorted(TALLY.items()))
        reporter.write_line(f"\nschemathesis: {counts}")
