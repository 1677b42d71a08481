"""Console pages for administration: the Audit Log (every role) and Users and Roles (Full
Administrators only). Mounted at /administration/. The core never imports the apps."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import models, transaction
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import path, reverse
from django.utils import timezone
from django.views import View
from django.views.generic import TemplateView
from rest_framework.authtoken.models import Token

from smtpadmin import throttle
from smtpadmin.access import RoleRequiredMixin
from smtpadmin.console_config import ExportDownload, ImportPage
from smtpadmin.listing import Action, Column, DeleteConfirm, ObjectList
from smtpadmin.models import AuditEntry
from smtpadmin.navigation import Node, navigation
from smtpadmin.roles import Role, role_from_slug, set_role
from smtpadmin.sheets import PropertySheet, SheetForm, Tab
from smtpadmin.users import (
    forget_failed_logins,
    last_full_administrator_problem,
    login_locks,
    record_user_change,
    stored_role,
    unlock_logins,
    user_snapshot,
)

AUDIT_PAGE_SIZE = 50

# --- the audit log ------------------------------------------------------------------------


class AuditFilterForm(forms.Form):
    object_type = forms.ChoiceField(required=False, label="Object type")
    object = forms.CharField(
        required=False, max_length=300, label="Object", help_text="Its id, or part of its name."
    )
    user = forms.CharField(required=False, max_length=150, label="User")
    since = forms.DateTimeField(
        required=False,
        label="Since",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    until = forms.DateTimeField(
        required=False,
        label="Until",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        types = (
            AuditEntry.objects.order_by("object_type")
            .values_list("object_type", flat=True)
            .distinct()
        )
        field = self.fields["object_type"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [("", "(all)"), *((t, t) for t in types)]

    def clean(self) -> dict[str, Any]:
        data: dict[str, Any] = super().clean() or self.cleaned_data
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            self.add_error("until", "'Until' must not be before 'Since'.")
        return data

    def filter(self, entries: models.QuerySet[AuditEntry]) -> models.QuerySet[AuditEntry]:
        data = self.cleaned_data
        if data.get("object_type"):
            entries = entries.filter(object_type__iexact=data["object_type"])
        text = (data.get("object") or "").strip()
        if text:
            entries = entries.filter(Q(object_id=text) | Q(object_repr__icontains=text))
        user = (data.get("user") or "").strip()
        if user:
            entries = entries.filter(username__icontains=user)
        if data.get("since"):
            entries = entries.filter(at__gte=data["since"])
        if data.get("until"):
            entries = entries.filter(at__lte=data["until"])
        return entries


class AuditLogView(RoleRequiredMixin, TemplateView):
    """Every configuration change, newest first, filtered and paginated."""

    template_name = "smtpadmin/audit_log.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        form = AuditFilterForm(self.request.GET or None)
        entries = AuditEntry.objects.order_by("-at", "-id")
        if form.is_bound and form.is_valid():
            entries = form.filter(entries)
        elif form.is_bound:
            entries = entries.none()
        page = Paginator(entries, AUDIT_PAGE_SIZE).get_page(self.request.GET.get("page"))
        return super().get_context_data(
            title="Audit Log",
            nav_key="audit-log",
            form=form,
            page=page,
            rows=[_audit_row(entry) for entry in page.object_list],
            **kwargs,
        )

    def render_to_response(self, context: dict[str, Any], **kwargs: Any) -> Any:
        if context["form"].errors:
            kwargs["status"] = 400
        return super().render_to_response(context, **kwargs)


def _audit_row(entry: AuditEntry) -> dict[str, Any]:
    object_filter = "?" + urlencode({"object_type": entry.object_type, "object": entry.object_id})
    return {
        "at": timezone.localtime(entry.at),
        "who": entry.username or "system",
        "action": entry.get_action_display(),
        "object_type": entry.object_type,
        "object": entry.object_repr or entry.object_id,
        "object_url": reverse("admin_pages:audit-log") + object_filter if entry.object_id else "",
        "field": entry.field,
        "old": entry.old_value,
        "new": entry.new_value,
    }


# --- users and roles ----------------------------------------------------------------------

ROLE_CHOICES = [(r.slug, r.label) for r in (Role.FULL, Role.ADMINISTRATOR, Role.VIEW_ONLY)] + [
    (Role.NONE.slug, "No role (cannot use the console)")
]


class UserForm(SheetForm):
    """A user's sheet: the role from group membership, a password that is never shown."""

    role = forms.ChoiceField(choices=ROLE_CHOICES, label="Role")
    new_password = forms.CharField(
        required=False,
        strip=False,
        label="New password",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    confirm_password = forms.CharField(
        required=False,
        strip=False,
        label="Confirm the password",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        user = self.instance
        self.initial["role"] = (stored_role(user) if user.pk else Role.VIEW_ONLY).slug
        if user.pk is None:
            self.fields["new_password"].label = "Password"
            self.fields["new_password"].help_text = "The password the user logs in with."
        else:
            self.fields["new_password"].help_text = "Leave blank to keep the current password."

    def clean(self) -> dict[str, Any]:
        data: dict[str, Any] = super().clean() or self.cleaned_data
        password = data.get("new_password") or ""
        if self.instance.pk is None and not password:
            self.add_error("new_password", "A new user needs a password.")
        elif password:
            if password != data.get("confirm_password"):
                self.add_error("confirm_password", "The two passwords differ.")
            else:
                candidate = User(
                    username=data.get("username") or self.instance.username,
                    email=data.get("email") or "",
                    first_name=data.get("first_name") or "",
                    last_name=data.get("last_name") or "",
                )
                try:
                    validate_password(password, candidate)
                except ValidationError as exc:
                    self.add_error("new_password", exc)
        if self.instance.pk is not None and "role" in data:
            new_role = role_from_slug(data["role"])
            problem = last_full_administrator_problem(
                self.instance, role=new_role, is_active=data.get("is_active")
            )
            if problem:
                self.add_error("role" if new_role is not Role.FULL else "is_active", problem)
        return data


USER_TABS = [
    Tab("General", ("username", "first_name", "last_name", "email", "is_active")),
    Tab(
        "Role",
        ("role",),
        "Full Administrator: everything, including users and roles. Administrator: all "
        "configuration. View Only Administrator: read everything, change nothing.",
    ),
    Tab("Password", ("new_password", "confirm_password")),
]


class UsersOnly(RoleRequiredMixin):
    """Only Full Administrators see or change users and roles."""

    read_role = Role.FULL
    write_role = Role.FULL


class UserList(UsersOnly, ObjectList):
    title = "Users and Roles"
    nav_key = "users-and-roles"
    search_fields = ("username", "first_name", "last_name", "email")
    columns = [
        Column("User name", lambda u: u.username, "username", link=True),
        Column("Name", lambda u: u.get_full_name(), "last_name"),
        Column("E-mail", lambda u: u.email, "email"),
        Column("Role", lambda u: stored_role(u).label),
        Column("Active", lambda u: "yes" if u.is_active else "no", "is_active"),
        Column("Last login", lambda u: u.last_login, "last_login"),
    ]

    def get_queryset(self) -> models.QuerySet[Any]:
        return User.objects.order_by("username")

    def object_url(self, obj: Any) -> str:
        return reverse("admin_pages:user", args=[obj.pk])

    def actions(self) -> list[Action]:
        return [Action("New User", reverse("admin_pages:user-new"))]


class UserSheet(UsersOnly, PropertySheet):
    model = User
    base_form = UserForm
    tabs = USER_TABS
    nav_key = "users-and-roles"

    def get_object(self) -> User | None:
        return get_object_or_404(User, pk=self.kwargs["pk"])

    def get_success_url(self, instance: Any) -> str:
        return reverse("admin_pages:user", args=[instance.pk])

    def facts(self) -> list[tuple[str, Any]]:
        user = self.get_object()
        if user is None:
            return []
        return [
            (
                "Failed logins (15 minutes)",
                throttle.name_failures(throttle.Scope.CONSOLE, user.username),
            ),
            ("Login locks", throttle.describe(login_locks(user)) or "none"),
        ]

    def actions(self) -> list[Action]:
        pk = self.kwargs.get("pk")
        if not pk:
            return []
        return [
            Action("Unlock", reverse("admin_pages:user-unlock", args=[pk]), method="post"),
            Action("Delete", reverse("admin_pages:user-delete", args=[pk])),
        ]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        form = context.get("form")
        if form is not None and form.instance.pk:
            context["title"] = f"{form.instance.username} Properties"
        return context

    def save(self, form: forms.ModelForm[Any]) -> models.Model:
        """Fields, role and password in one transaction, audited like the API does."""
        data = form.cleaned_data
        with transaction.atomic():
            pk = form.instance.pk
            before = user_snapshot(User.objects.get(pk=pk)) if pk else {}
            user = form.save(commit=False)
            if data.get("new_password"):
                user.set_password(data["new_password"])
            user.save()
            if data.get("new_password"):
                forget_failed_logins(user)
            set_role(user, role_from_slug(data["role"]))
            record_user_change(self.request.user, before, user, create=pk is None)
        if user.pk == self.request.user.pk and data.get("new_password"):
            update_session_auth_hash(self.request, user)  # stay logged in after one's own change
        return user


class NewUser(UserSheet):
    title = "New User"

    def get_object(self) -> User | None:
        return None


class UserUnlock(UsersOnly, View):
    """Lift a user's login locks (POST only, audited)."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        user = get_object_or_404(User, pk=pk)
        locked = unlock_logins(user, by=request.user)
        plural = "" if locked == 1 else "es"
        messages.success(request, f"{user.username}: unlocked ({locked} locked address{plural}).")
        return redirect("admin_pages:user", pk=user.pk)


class UserDelete(UsersOnly, DeleteConfirm):
    model = User
    nav_key = "users-and-roles"

    def success_url(self, instance: Any) -> str:
        return reverse("admin_pages:users")

    def problem(self, instance: Any) -> str:
        return last_full_administrator_problem(instance, delete=True)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        # An API token's text is its secret: name it, never show it.
        also = {"API token" if item.startswith("Token:") else item for item in context["also"]}
        if Token.objects.filter(user=context["object"]).exists():
            also.add("API token")  # deleted in bulk, so the collector may not list it
        context["also"] = sorted(also)
        return context


# --- navigation and URLs ------------------------------------------------------------------


def _tools(user: Any) -> list[Node]:
    return [
        Node(
            key="audit-log",
            label="Audit Log",
            url=reverse("admin_pages:audit-log"),
            icon="tools",
        ),
        Node(
            key="users-and-roles",
            label="Users and Roles",
            url=reverse("admin_pages:users"),
            icon="tools",
            min_role=Role.FULL,
        ),
        Node(
            key="config-export",
            label="Export Configuration",
            url=reverse("admin_pages:config-export"),
            icon="tools",
        ),
        Node(
            key="config-import",
            label="Import Configuration",
            url=reverse("admin_pages:config-import"),
            icon="tools",
            min_role=Role.FULL,
        ),
    ]


navigation.register("tools", _tools, order=80)

app_name = "admin_pages"
urlpatterns = [
    path("audit-log/", AuditLogView.as_view(), name="audit-log"),
    path("users/", UserList.as_view(), name="users"),
    path("users/new/", NewUser.as_view(), name="user-new"),
    path("users/<int:pk>/", UserSheet.as_view(), name="user"),
    path("users/<int:pk>/unlock/", UserUnlock.as_view(), name="user-unlock"),
    path("users/<int:pk>/delete/", UserDelete.as_view(), name="user-delete"),
    path("configuration/export/", ExportDownload.as_view(), name="config-export"),
    path("configuration/import/", ImportPage.as_view(), name="config-import"),
]
