"""The right pane's contents list (columns sorted, rows searched and paged on the server, so a
list of 10,000 connectors costs one page; "New" actions) and delete with a confirmation that
shows what depends on the object."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from django.contrib import messages
from django.core.paginator import Page, Paginator
from django.db import models, router
from django.db.models import ProtectedError
from django.db.models.deletion import Collector
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.generic import TemplateView

from smtpadmin import audit
from smtpadmin.access import RoleRequiredMixin

PAGE_SIZE = 50  # rows of a list page unless ?size= asks for one of PAGE_SIZES
PAGE_SIZES = (25, 50, 100, 200, 500)
MAX_QUERY = 200  # characters of a search that are used


@dataclass(frozen=True)
class Column:
    label: str
    value: Callable[[Any], Any]
    order_by: str = ""  # the database ordering for this column ("" = not sortable)
    link: bool = False  # the cell links to the object's sheet


@dataclass(frozen=True)
class Action:
    """A toolbar button: a link (GET) or a small form (POST, for Start / Stop / Pause)."""

    label: str
    url: str
    method: str = "get"


class ObjectList(RoleRequiredMixin, TemplateView):
    """Subclass with ``title``, ``columns``, ``get_queryset`` and ``object_url``."""

    template_name = "smtpadmin/list.html"
    title: ClassVar[str] = ""
    nav_key: ClassVar[str] = ""
    columns: ClassVar[list[Column]]
    empty_text: ClassVar[str] = "There are no items to show in this view."
    # Fields ``?q=`` searches (case-insensitive, contained); none: no search box.
    search_fields: ClassVar[tuple[str, ...]] = ()

    def get_queryset(self) -> models.QuerySet[Any]:
        raise NotImplementedError

    def object_url(self, obj: Any) -> str:
        return ""

    def actions(self) -> list[Action]:
        """ "New ..." and similar buttons, shown to roles that may write."""
        return []

    def row_actions(self, obj: Any) -> list[Action]:
        """Buttons in a row (POST actions such as Start / Pause), shown to roles that may write."""
        return []

    def sorted_queryset(self) -> tuple[models.QuerySet[Any], str, str]:
        """The rows of the page asked for: searched, sorted and one page long. Query
        parameters that are not valid (an unknown column, a page that does not exist) are
        ignored: the first page, in the list's own order."""
        queryset = self.get_queryset()
        query = self.search_query()
        if query and self.search_fields:
            match = models.Q()
            for name in self.search_fields:
                match |= models.Q(**{f"{name}__icontains": query})
            queryset = queryset.filter(match)
        sort = self.request.GET.get("sort", "")
        direction = "desc" if self.request.GET.get("dir") == "desc" else "asc"
        keys = {c.order_by for c in self.columns if c.order_by}
        if sort in keys:
            queryset = queryset.order_by(f"{'-' if direction == 'desc' else ''}{sort}", "pk")
        elif not queryset.ordered:
            queryset = queryset.order_by("pk")
        self.page = page_of(queryset, self.request.GET, self.page_size())
        return self.page.object_list, sort, direction  # type: ignore[return-value]

    def search_query(self) -> str:
        return str(self.request.GET.get("q", ""))[:MAX_QUERY].strip()

    def page_size(self) -> int:
        return number(self.request.GET.get("size"), PAGE_SIZES, PAGE_SIZE)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        queryset, sort, direction = self.sorted_queryset()
        headers = [
            {
                "label": c.label,
                "sort": c.order_by,
                "active": c.order_by and c.order_by == sort,
                "next_dir": "desc" if c.order_by == sort and direction == "asc" else "asc",
                "dir": direction,
            }
            for c in self.columns
        ]
        rows = [
            {
                "url": self.object_url(obj),
                "cells": [{"value": c.value(obj), "link": c.link} for c in self.columns],
                "actions": self.row_actions(obj) if self.can_write else [],
            }
            for obj in queryset
        ]
        return super().get_context_data(
            title=self.title,
            nav_key=self.nav_key,
            headers=headers,
            rows=rows,
            has_row_actions=any(row["actions"] for row in rows),
            actions=self.actions() if self.can_write else [],
            empty_text=self.empty_text,
            page=self.page,
            searchable=bool(self.search_fields),
            query=self.search_query(),
            **kwargs,
        )


def number(value: Any, allowed: Sequence[int], default: int) -> int:
    """``value`` as one of the ``allowed`` numbers, else ``default``."""
    try:
        chosen = int(str(value))
    except ValueError:
        return default
    return chosen if chosen in allowed else default


def page_of(queryset: models.QuerySet[Any], query: Mapping[str, Any], size: int) -> Page:
    """The page ``?page=`` asks for; the first page when it is not a page number there is."""
    paginator = Paginator(queryset, size)
    try:
        wanted = int(str(query.get("page", "1")))
    except ValueError:
        wanted = 1
    return paginator.page(wanted if 1 <= wanted <= paginator.num_pages else 1)


SHOWN_ON_DELETE = 50  # entries of each list a delete confirmation shows


def at_most_shown(items: list[str]) -> list[str]:
    """The first SHOWN_ON_DELETE entries, then how many more there are."""
    if len(items) <= SHOWN_ON_DELETE:
        return items
    return [*items[:SHOWN_ON_DELETE], f"… and {len(items) - SHOWN_ON_DELETE} more"]


def first_of(
    rows: models.QuerySet[Any],
    label: Callable[[Any], str],
    limit: int = SHOWN_ON_DELETE,
    *,
    count: Callable[[], int] | None = None,
) -> list[str]:
    """The labels of the first ``limit`` of ``rows`` (in the queryset's order), then how many
    more there are (``count``: a cheaper way to count them than ``rows.count()``): one page
    and a count from the database, however many rows there are."""
    found = list(rows[: limit + 1])
    shown = [label(row) for row in found[:limit]]
    if len(found) > limit:
        total = count() if count is not None else rows.count()
        shown.append(f"… and {total - limit} more")
    return shown


def _kind(model: type[models.Model]) -> str:
    return str(model._meta.verbose_name).title()


def _labelled(obj: models.Model) -> str:
    return f"{_kind(type(obj))}: {obj}"


def protecting(instance: models.Model) -> list[str]:
    """The rows whose foreign key to ``instance`` is PROTECT or RESTRICT, the first of each
    kind and how many more, read a page at a time (the deletion collector would load every
    one of them to say so)."""
    blocked: list[str] = []
    for relation in instance._meta.related_objects:
        if relation.many_to_many or relation.on_delete not in (models.PROTECT, models.RESTRICT):
            continue
        related = relation.related_model._base_manager.filter(**{relation.field.name: instance})
        ordering = related.model._meta.ordering or ["pk"]
        blocked += first_of(related.order_by(*ordering, "pk"), _labelled)
    return blocked


def dependents(instance: models.Model) -> tuple[list[str], list[str]]:
    """What deleting ``instance`` would also delete, and what prevents it (protected rows).
    Rows that protect it directly are named from bounded queries; only when there are none
    does the deletion collector work out the cascade (and what protects the rows in it)."""
    blocked = protecting(instance)
    if blocked:
        return [], blocked
    collector = Collector(using=router.db_for_write(type(instance)))
    try:
        collector.collect([instance])
    except ProtectedError as exc:
        blocked = sorted(f"{_kind(type(obj))}: {obj}" for obj in exc.protected_objects)
        return [], at_most_shown(blocked)
    also: list[str] = []
    for model, objects in collector.data.items():
        also.extend(f"{_kind(model)}: {obj}" for obj in objects if obj != instance)
    return at_most_shown(sorted(also)), blocked


class DeleteConfirm(RoleRequiredMixin, TemplateView):
    """GET shows the object, what goes with it and what blocks it; POST deletes (audited)."""

    template_name = "smtpadmin/delete.html"
    model: ClassVar[type[models.Model]]
    nav_key: ClassVar[str] = ""

    def get_object(self) -> models.Model:
        return get_object_or_404(self.model, pk=self.kwargs["pk"])

    def success_url(self, instance: models.Model) -> str:
        raise NotImplementedError

    def problem(self, instance: Any) -> str:
        """A reason beyond protected rows why this may not be deleted ('' = none)."""
        return audit.delete_problem(instance)

    def links(self, instance: Any) -> list[str]:
        """Links that disappear with the object (a connector's bridgehead, say): at most
        about SHOWN_ON_DELETE of each kind, with how many more (``first_of``)."""
        return []

    def dependents(self, instance: models.Model) -> tuple[list[str], list[str]]:
        """What goes with ``instance`` and what blocks its deletion (see ``dependents``),
        at most SHOWN_ON_DELETE of each kind, with how many more."""
        return dependents(instance)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        instance = self.get_object()
        also, blocked = self.dependents(instance)
        problem = self.problem(instance)
        return super().get_context_data(
            object=instance,
            kind=instance._meta.verbose_name,
            also=also,
            links=self.links(instance),
            blocked=blocked,
            problem=problem,
            can_delete=self.can_write and not blocked and not problem,
            can_write=self.can_write,
            nav_key=self.nav_key,
            title=f"Delete {instance}",
            cancel=self.success_url(instance),
            **kwargs,
        )

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        instance = self.get_object()
        _also, blocked = self.dependents(instance)
        problem = self.problem(instance)
        if blocked or problem:
            return self.render_to_response(self.get_context_data(), status=409)
        name = str(instance)
        target = self.success_url(instance)
        try:
            audit.delete(request.user, instance)
        except audit.DeleteRefused:
            # Something started to depend on it since the page was shown.
            return self.render_to_response(self.get_context_data(), status=409)
        messages.success(request, f"Deleted {name}.")
        return redirect(target)
