"""The console tree as data.

The core defines the sections of the Organization (Global Settings, Recipients, Servers,
Routing Groups, Tools); each app fills them from its ``AppConfig.ready()`` with providers, the
way ``admin.site.register`` works, so the core never imports the apps. The tree is built per
request from the database and the user's role, and one recursive template renders it.

Containers that can hold many objects (a routing group's connectors, a server's virtual
servers) are branches: their children are loaded only when the container is opened (an htmx
request for the children fragment), or on the server when the current page lies inside them,
and then at most ``BRANCH_LIMIT`` of them with a "More…" link to the container's own page,
which lists (and searches) all of them. So a page costs the same however many connectors
there are. While there are few of a kind (``BRANCH_LIMIT`` connectors in all, say), every page
opens those branches, and a small organization's tree looks as it always did.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.urls import reverse

from smtpadmin.roles import Role, role_of

BRANCH_LIMIT = 25  # children a branch shows; the rest are behind "More…"


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
    # A branch: its children come from ``children_url`` when it is opened; until then (and
    # unless the current page lies inside it) ``children`` is empty and it shows collapsed.
    branch: bool = False
    expanded: bool = False

    @property
    def children_url(self) -> str:
        return reverse("smtpadmin:tree-children", args=[self.key]) if self.branch else ""

    @property
    def has_children(self) -> bool:
        return self.branch or bool(self.children)

    @property
    def is_open(self) -> bool:
        return bool(self.children) and (self.expanded or not self.branch)

    def visible_to(self, role: Role) -> Node | None:
        """A copy without the nodes (and the branches) this role may not see."""
        if role < self.min_role:
            return None
        kept = [c for c in (child.visible_to(role) for child in self.children) if c is not None]
        return Node(**{**self.__dict__, "children": kept})

    def contains(self, key: str) -> bool:
        return self.key == key or any(child.contains(key) for child in self.children)


def few_by(rows: Any, key: Callable[[Any], str], node: Callable[[Any], Node]) -> Any:
    """``rows`` (a queryset) as {branch key: nodes} when there are at most ``BRANCH_LIMIT``
    of them, read in one query; None when there are more."""
    found = list(rows[: BRANCH_LIMIT + 1])
    if len(found) > BRANCH_LIMIT:
        return None
    children: dict[str, list[Node]] = {}
    for row in found:
        children.setdefault(key(row), []).append(node(row))
    return children


def more_node(container_key: str, url: str) -> Node:
    """The last child of a branch that has more than it shows: its container's own page."""
    return Node(key=f"{container_key}-more", label="More…", url=url, icon="more")


def bounded(
    container_key: str,
    nodes: list[Node],
    path: frozenset[str],
    on_path: Callable[[], list[Node]],
    url: str,
) -> list[Node]:
    """The first ``BRANCH_LIMIT`` of ``nodes`` (which holds at most one more, to tell), the
    ones ``on_path`` finds for the current page when they are further down, and "More…"."""
    shown = nodes[:BRANCH_LIMIT]
    if len(nodes) <= BRANCH_LIMIT:
        return shown
    keys = {node.key for node in shown}
    if path - keys:
        shown += [node for node in on_path() if node.key not in keys]
    return [*shown, more_node(container_key, url)]


Provider = Callable[[Any], list[Node]]
# (user, the key's match, the keys of the path to the current page) -> the branch's children
BranchLoader = Callable[[Any, "re.Match[str]", frozenset[str]], list[Node]]
# the children of every branch of a kind by branch key, or None: there are too many
AllChildren = Callable[[], "dict[str, list[Node]] | None"]
# the key's match -> the key of the node that holds it ("" = none known)
ParentOf = Callable[["re.Match[str]"], str]

SECTIONS = [
    ("dashboard", "Dashboard", "dashboard"),
    ("global", "Global Settings", "settings"),
    ("recipients", "Recipients", "recipients"),
    ("servers", "Servers", "servers"),
    ("routing_groups", "Routing Groups", "routing"),
    ("tools", "Tools", "tools"),
]
MAX_DEPTH = 20  # a parent chain longer than this is a loop in the registered parents


class Navigation:
    def __init__(self) -> None:
        self._providers: dict[str, list[tuple[int, Provider]]] = {key: [] for key, *_ in SECTIONS}
        self._section_urls: dict[str, Callable[[], str]] = {}
        self._branches: list[tuple[re.Pattern[str], BranchLoader]] = []
        self._few: dict[str, AllChildren] = {}
        self._parents: list[tuple[re.Pattern[str], ParentOf]] = []

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

    def register_branch(
        self, pattern: str, loader: BranchLoader, few: AllChildren | None = None
    ) -> None:
        """Nodes whose key matches ``pattern`` (a regular expression for the whole key) load
        their children with ``loader``: bounded, and including the nodes on the path.

        ``few`` answers, in one query, the children of every branch of this kind by branch
        key while they are few in all (None once they are not): then every page opens them,
        as a small organization's tree always was."""
        self._branches.append((re.compile(pattern), loader))
        if few is not None:
            self._few[pattern] = few

    def register_parent(self, pattern: str, parent: ParentOf) -> None:
        """How to find the node holding a node whose key matches ``pattern`` (a connector's
        container, say), so that the tree opens the branches down to the current page."""
        self._parents.append((re.compile(pattern), parent))

    def path_to(self, key: str) -> frozenset[str]:
        """``key`` and the keys of the nodes above it, as far as the parents are known."""
        path: list[str] = []
        while key and key not in path and len(path) < MAX_DEPTH:
            path.append(key)
            key = next(
                (parent(m) for pattern, parent in self._parents if (m := pattern.fullmatch(key))),
                "",
            )
        return frozenset(path)

    def children(self, user: Any, key: str, path: frozenset[str] = frozenset()) -> list[Node]:
        """The children of the branch ``key`` as the user's role may see them, the branches
        among them on ``path`` open (KeyError: no branch has that key)."""
        role = role_of(user)
        nodes = [self._open(user, node, path, {}) for node in self._load(user, key, path)]
        return [n for n in (node.visible_to(role) for node in nodes) if n is not None]

    def _load(self, user: Any, key: str, path: frozenset[str]) -> list[Node]:
        for pattern, loader in self._branches:
            match = pattern.fullmatch(key)
            if match:
                return loader(user, match, path)
        raise KeyError(key)

    def _open(
        self,
        user: Any,
        node: Node,
        path: frozenset[str],
        few: dict[str, dict[str, list[Node]] | None],
    ) -> Node:
        """Load the branches on the path (the current page's node included), and fill in those
        of kinds that hold few children, recursively."""
        if node.branch and node.key in path:
            node.children = self._load(user, node.key, path)
            node.expanded = True
        elif node.branch:
            everything = self._all_children(node.key, few)
            if everything is not None:  # known whole: a plain node, as it always was
                node.children = everything.get(node.key, [])
                node.branch = False
        node.children = [self._open(user, child, path, few) for child in node.children]
        return node

    def _all_children(
        self, key: str, answers: dict[str, dict[str, list[Node]] | None]
    ) -> dict[str, list[Node]] | None:
        """The children of every branch of ``key``'s kind while they are few (asked once per
        tree), else None."""
        for pattern, few in self._few.items():
            if re.fullmatch(pattern, key):
                if pattern not in answers:
                    answers[pattern] = few()
                return answers[pattern]
        return None

    def tree(
        self, user: Any, organization_name: str, organization_url: str, selected: str = ""
    ) -> Node | None:
        role = role_of(user)
        if role is Role.NONE:
            return None
        path = self.path_to(selected)
        sections = []
        for key, label, icon in SECTIONS:
            children = [
                node for _order, provider in self._providers[key] for node in provider(user)
            ]
            if any(pattern.fullmatch(key) for pattern, _loader in self._branches):
                # A section whose contents may be many (the servers) is a branch that is
                # always open: bounded, with the current page's part.
                children += self._load(user, key, path)
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
        return self._open(user, root, path, {}).visible_to(role)


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
