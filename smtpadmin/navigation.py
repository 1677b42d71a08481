"""The console tree as data.

The core defines the sections of the Organization (Global Settings, Recipients, Servers,
Routing Groups, Tools); each app fills them from its ``AppConfig.ready()`` with providers, the
way ``admin.site.register`` works, so the core never imports the apps. The tree is built per
request from the database and the user's role, and one recursive template renders it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from smtpadmin.roles import Role, role_of


@dataclass
class Node:
    key: str
    label: str
    url: str = ""
    icon: str = "folder"
    status: str = ""  # shown as a badge: running, stopped, paused, disabled, not_responding...
    status_text: str = ""
    min_role: Role = Role.VIEW_ONLY
    children: list[Node] = field(default_factory=list)

    def visible_to(self, role: Role) -> Node | None:
        if role < self.min_role:
            return None
        kept = [c for c in (child.visible_to(role) for child in self.children) if c is not None]
        return Node(**{**self.__dict__, "children": kept})

    def contains(self, key: str) -> bool:
        return self.key == key or any(child.contains(key) for child in self.children)


Provider = Callable[[Any], list[Node]]

SECTIONS = [
    ("global", "Global Settings", "settings"),
    ("recipients", "Recipients", "recipients"),
    ("servers", "Servers", "servers"),
    ("routing_groups", "Routing Groups", "routing"),
    ("tools", "Tools", "tools"),
]


class Navigation:
    def __init__(self) -> None:
        self._providers: dict[str, list[tuple[int, Provider]]] = {key: [] for key, *_ in SECTIONS}
        self._section_urls: dict[str, Callable[[], str]] = {}

    def register(self, section: str, provider: Provider, order: int = 50) -> None:
        if section not in self._providers:
            raise KeyError(f"unknown navigation section {section!r}")
        self._providers[section].append((order, provider))
        self._providers[section].sort(key=lambda item: item[0])

    def link_section(self, section: str, url: Callable[[], str]) -> None:
        """The page a section node opens (its contents list, like the Servers container)."""
        if section not in self._providers:
            raise KeyError(f"unknown navigation section {section!r}")
        self._section_urls[section] = url

    def tree(self, user: Any, organization_name: str, organization_url: str) -> Node | None:
        role = role_of(user)
        if role is Role.NONE:
            return None
        sections = []
        for key, label, icon in SECTIONS:
            children = [
                node for _order, provider in self._providers[key] for node in provider(user)
            ]
            link = self._section_urls.get(key)
            if children or link:
                url = link() if link else ""
                sections.append(Node(key=key, label=label, url=url, icon=icon, children=children))
        root = Node(
            key="organization",
            label=organization_name,
            url=organization_url,
            icon="organization",
            children=sections,
        )
        return root.visible_to(role)


navigation = Navigation()


class SelectsNode:
    """Marks this page's node in the tree; the key depends on the object, so it is computed."""

    def selected_node(self) -> str:
        return ""

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context: dict[str, Any] = super().get_context_data(**kwargs)  # type: ignore[misc]
        key = self.selected_node()
        if key:
            context["nav_key"] = key
        return context
