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
from schemathesis.specs.openapi.checks import positive_data_acceptance

from smtpadmin.wsgi import application
from tests.smtpadmin.api_world import ApiWorld, make_api_world

SOAK = os.environ.get("SMTPADMIN_SOAK", "") == "1"
EXAMPLES = 300 if SOAK else 15

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
# The coverage phase sends every boundary case the schema defines (some 6,000 requests): for
# the soak; the normal run has the explicit examples and the random valid and invalid cases.
schema.config.phases.update(
    phases=["examples", "coverage", "fuzzing"] if SOAK else ["examples", "fuzzing"]
)

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


#: Refusals the schema can describe (types, lengths, bounds, required and unknown fields,
#: choices): a request the schema allows must never be refused for one of these. Matched at
#: the start of a message, which may echo the value sent.
SCHEMA_SHAPED = re.compile(
    r"(Item \d+: )?("
    r"This field (does not exist|is required|may not be null|may not be blank)\."
    r"|This list may not be empty\.|Ensure |\".*\" is not a valid choice\."
    r"|A valid (integer|number) is required\.|Must be (a valid boolean|true or false)\."
    r"|Not a valid string\.|Expected an? |Enter a (whole )?number\.|Enter true or false\."
    r"|(Date|Time|Datetime) has wrong format|Give a (value|string|number)"
    r")"
)


def messages_of(data: Any) -> Iterator[str]:
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for value in data.values():
            yield from messages_of(value)
    elif isinstance(data, list):
        for value in data:
            yield from messages_of(value)


def check_valid_data_is_refused_only_for_rules_beyond_the_schema(case: Any, response: Any) -> None:
    """schemathesis's positive_data_acceptance, without the refusals no schema can express
    (an id that names no object, a domain that is not a domain, a weak password, a rule across
    two fields): those are 400 with the field's message, as documented."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return
    shaped = [m for m in messages_of(response.json()) if SCHEMA_SHAPED.match(m)]
    assert not shaped, (
        f"{case.operation.label}: a request valid by the schema was refused for {shaped}\n"
        f"{case.as_curl_command()}\n{response.text}"
    )


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
            response = case.call(headers=api_world.headers)
            case.validate_response(
                response, headers=api_world.headers, excluded_checks=[positive_data_acceptance]
            )
            check_valid_data_is_refused_only_for_rules_beyond_the_schema(case, response)
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
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is not None and reporter is not None:
        counts = ", ".join(f"{key}: {n}" for key, n in sorted(TALLY.items()))
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nschemathesis: {counts}")
