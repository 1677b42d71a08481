"""Strict readers for settings that come from the environment.

A value that cannot be parsed is a startup error, never a silent default: ``DEBUG=yes please``
must not quietly mean False.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})


class EnvironmentError_(ValueError):
    """A setting in the environment has a value that cannot be used."""


def env_str(name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get(name, default)


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    if name not in environ:
        return default
    word = environ[name].strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise EnvironmentError_(
        f"{name}={environ[name]!r} is not a boolean; use one of "
        f"{sorted(TRUE_WORDS)} or {sorted(FALSE_WORDS - {''})}"
    )


def env_int(
    name: str,
    default: int,
    environ: Mapping[str, str] | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    environ = os.environ if environ is None else environ
    if name not in environ:
        return default
    raw = environ[name].strip()
    try:
        value = int(raw)
    except ValueError:
        raise EnvironmentError_(f"{name}={raw!r} is not a whole number") from None
    if minimum is not None and value < minimum:
        raise EnvironmentError_(f"{name}={value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise EnvironmentError_(f"{name}={value} is above the maximum {maximum}")
    return value


def env_list(name: str, default: list[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """A comma-separated list; blanks around items are dropped, empty items are an error."""
    environ = os.environ if environ is None else environ
    if name not in environ:
        return list(default)
    raw = environ[name].strip()
    if not raw:
        return []
    items = [item.strip() for item in raw.split(",")]
    if any(not item for item in items):
        raise EnvironmentError_(f"{name}={raw!r} has an empty item")
    return items


def env_networks(
    name: str, default: list[str], environ: Mapping[str, str] | None = None
) -> list[str]:
    """A comma-separated list of IP addresses and networks (``192.0.2.10``, ``10.0.0.0/8``,
    ``2001:db8::/32``); anything else, or a network with host bits set, is an error."""
    networks = []
    for item in env_list(name, default, environ):
        try:
            networks.append(str(ipaddress.ip_network(item)))
        except ValueError as exc:
            raise EnvironmentError_(
                f"{name}: {item!r} is not an IP address or network (CIDR): {exc}"
            ) from None
    return networks
