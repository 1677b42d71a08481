"""``GET /metrics``: the Prometheus text format.

Apps register what they expose in ``AppConfig.ready()`` (the core imports none of them):
``counter()`` and ``histogram()`` name what ``smtpadmin.counters`` counts (read back from the
running totals), ``gauges()`` a function that reads current figures (queue depth, sessions)
with bounded label sets.

Never open by default: an administrator's API token (``Authorization: Token ...``) or session,
the scrape token ``SMTPADMIN_METRICS_TOKEN`` (``Authorization: Bearer ...``), or a client
address in ``SMTPADMIN_METRICS_ALLOW``.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from smtpadmin.clients import client_address
from smtpadmin.counters import labels_of
from smtpadmin.roles import Role, role_of

PREFIX = "smtpadmin_"


@dataclass(frozen=True)
class Exposed:
    name: str  # as counted (smtpadmin.counters), without the prefix
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()  # histograms: the upper bounds, each shown even when empty


COUNTERS: dict[str, Exposed] = {}
HISTOGRAMS: dict[str, Exposed] = {}
GAUGES: list[Callable[[], Iterable[Metric]]] = []


def counter(name: str, help: str, labels: tuple[str, ...] = ()) -> None:
    COUNTERS[name] = Exposed(name, help, labels)


def histogram(
    name: str, help: str, labels: tuple[str, ...] = (), buckets: tuple[float, ...] = ()
) -> None:
    HISTOGRAMS[name] = Exposed(name, help, labels, buckets)


def gauges(reader: Callable[[], Iterable[Metric]]) -> None:
    GAUGES.append(reader)


class Figures(Collector):
    """One scrape: the totals in one query, then every registered gauge reader."""

    def collect(self) -> Iterable[Metric]:
        from smtpadmin.models import TotalCount

        totals: dict[str, list[tuple[dict[str, str], int]]] = defaultdict(list)
        for name, stored, value in TotalCount.objects.values_list("name", "labels", "value"):
            totals[name].append((labels_of(stored), value))
        for exposed in COUNTERS.values():
            family = CounterMetricFamily(
                PREFIX + exposed.name, exposed.help, labels=list(exposed.labels)
            )
            for labels, value in sorted(totals.get(exposed.name, []), key=_order):
                family.add_metric([labels.get(k, "") for k in exposed.labels], value)
            yield family
        for exposed in HISTOGRAMS.values():
            yield _histogram(exposed, totals)
        for reader in GAUGES:
            yield from reader()


def _order(item: tuple[dict[str, str], int]) -> list[tuple[str, str]]:
    return sorted(item[0].items())


def _histogram(
    exposed: Exposed, totals: dict[str, list[tuple[dict[str, str], int]]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(PREFIX + exposed.name, exposed.help, labels=list(exposed.labels))
    series: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
    buckets: dict[tuple[str, ...], dict[float, int]] = defaultdict(lambda: defaultdict(int))
    for labels, value in totals.get(f"{exposed.name}:bucket", []):
        key = tuple(labels.get(k, "") for k in exposed.labels)
        le = labels.get("le", "+Inf")
        buckets[key][math.inf if le == "+Inf" else float(le)] += value
    for labels, value in totals.get(f"{exposed.name}:sum_ms", []):
        series[tuple(labels.get(k, "") for k in exposed.labels)]["sum"] = value / 1000
    for key in sorted(set(buckets) | set(series)):
        running, cumulative = 0, []
        for bound in sorted({*exposed.buckets, *buckets[key]}):
            running += buckets[key].get(bound, 0)
            cumulative.append(("+Inf" if bound == math.inf else _bound(bound), running))
        if not cumulative or cumulative[-1][0] != "+Inf":
            cumulative.append(("+Inf", running))
        family.add_metric(list(key), cumulative, series[key].get("sum", 0.0))
    return family


def _bound(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


# --- access ------------------------------------------------------------------------------------
def allowed(request: HttpRequest) -> bool | None:
    """True: may scrape; False: known but not allowed (403); None: not authenticated (401)."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, credential = header.partition(" ")
    token = settings.SMTPADMIN_METRICS_TOKEN
    if scheme.lower() == "bearer" and token and credential:
        return hmac.compare_digest(credential.strip().encode(), token.encode()) or None
    if settings.SMTPADMIN_METRICS_ALLOW and _listed(client_address(request)):
        return True
    user = request.user if hasattr(request, "user") else None
    if scheme.lower() == "token":
        try:
            found = TokenAuthentication().authenticate(request)  # type: ignore[arg-type]
        except AuthenticationFailed:
            return None
        user = found[0] if found else None
    if user is None or not user.is_authenticated:
        return None
    return role_of(user) >= Role.VIEW_ONLY


def _listed(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net) for net in settings.SMTPADMIN_METRICS_ALLOW)


def metrics_view(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return HttpResponse(status=405, headers={"Allow": "GET, HEAD"})
    verdict = allowed(request)
    if verdict is None:
        return HttpResponse(
            "Authentication required: an administrator's API token or the scrape token.\n",
            status=401,
            content_type="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    if not verdict:
        return HttpResponse("Not an administrator.\n", status=403, content_type="text/plain")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Figures())
    response = HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)
    response["Cache-Control"] = "no-store"
    return response
