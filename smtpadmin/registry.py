"""Registries the apps fill in their ``AppConfig.ready()``, so the core never imports them
(the way ``admin.site.register`` works)."""

from __future__ import annotations

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
