"""Registries the apps fill in their ``AppConfig.ready()``, so the core never imports them
(the way ``admin.site.register`` works)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rest_framework.routers import DefaultRouter


class ApiRegistry:
    """Viewsets for /api/v1/ and extra URL patterns (non-viewset endpoints)."""

    def __init__(self) -> None:
        self.router = DefaultRouter()
        self.extra_urls: list[Any] = []

    def register(self, prefix: str, viewset: Any, basename: str | None = None) -> None:
        self.router.register(prefix, viewset, basename=basename)

    def add_url(self, pattern: Any) -> None:
        self.extra_urls.append(pattern)

    @property
    def urls(self) -> list[Any]:
        return [*self.extra_urls, *self.router.urls]


api = ApiRegistry()


@dataclass(frozen=True)
class ConfigChild:
    """Rows owned by a section's object and exported nested in it (a connector's address
    spaces): replaced as a whole when they differ."""

    name: str  # the key in the parent's row, and the parent's related name: "address_spaces"
    model: Any
    parent_field: str  # the child's foreign key to the parent: "connector"
    key: tuple[str, ...]  # unique among one parent's children, and their order
    min_count: int = 0


@dataclass(frozen=True)
class ConfigSection:
    """How one model is exported and imported: a declarative description the apps register;
    the engine (``smtpadmin.configio``) walks the model's fields, so a field added later is
    carried without touching it.

    ``key`` names the natural key (a foreign key in it stands for the referenced object's own
    key); an empty key makes a singleton (the row with pk 1). References to other models are
    found from the model's foreign keys and many-to-many fields: each must point to a model
    of another registered section. ``skip`` lists fields that are not configuration and are
    not runtime fields either (values derived by ``clean()``, creation dates)."""

    name: str
    model: Any
    key: tuple[str, ...]
    order: int  # dependency order: a section comes after those it refers to
    children: tuple[ConfigChild, ...] = ()
    skip: tuple[str, ...] = ()
    # Called on the object just before it is saved by an import (inside its transaction),
    # with the acting user: e.g. to take a flag only one row may hold from the row holding it.
    before_save: Callable[[Any, Any], None] | None = None


class ConfigRegistry:
    """The sections of a configuration file, filled in by the apps' ``ready()``."""

    def __init__(self) -> None:
        self._sections: dict[str, ConfigSection] = {}

    def register(self, section: ConfigSection) -> None:
        self._sections[section.name] = section

    @property
    def sections(self) -> list[ConfigSection]:
        return sorted(self._sections.values(), key=lambda s: (s.order, s.name))


config_sections = ConfigRegistry()
