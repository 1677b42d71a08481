"""Console pages of the core: the organization's Message Delivery sheet."""

from __future__ import annotations

from typing import Any

from django.urls import path, reverse

from smtpadmin import pickers, views
from smtpadmin.models import Organization
from smtpadmin.navigation import Node, navigation
from smtpadmin.sheets import PropertySheet, Tab


class OrganizationSheet(PropertySheet):
    model = Organization
    title = "Message Delivery Properties"
    nav_key = "message-delivery"
    tabs = [
        Tab("General", ("name",)),
        Tab(
            "Defaults",
            ("sending_size_limit_kb", "receiving_size_limit_kb", "recipients_limit"),
            "Organization-wide limits, applied by every virtual server with its own (the "
            "smaller wins); blank = no limit. Receiving: mail for the accepted domains. "
            "Sending: mail from authenticated users, and mail relayed out of the organization.",
        ),
        Tab(
            "Sender Filtering",
            ("blocked_senders", "filter_blank_senders"),
            "One sender per line: user@example.com or *@example.com.",
        ),
        Tab(
            "Recipient Filtering",
            ("blocked_recipients", "filter_unknown_recipients"),
            "Filter unknown recipients (recipients who are not in the directory): on, an "
            "unknown address of an authoritative domain is refused at RCPT (550 5.1.1); off, "
            "it is accepted and then returned to its sender with an NDR, or forwarded to the "
            "virtual server's host for unresolved recipients.",
        ),
        Tab(
            "Connection Filtering",
            ("global_accept_list", "global_deny_list", "block_list_providers"),
            "One IP address or subnet (CIDR) per line.",
        ),
        Tab(
            "Message Tracking",
            ("message_tracking_enabled", "subject_logging_enabled", "tracking_retention_days"),
        ),
        Tab("Outbound", ("outbound_mail_disabled",)),
    ]

    def get_object(self) -> Organization:
        return Organization.get()


def _global_settings(user: Any) -> list[Node]:
    return [
        Node(
            key="message-delivery",
            label="Message Delivery",
            url=reverse("smtpadmin:organization"),
            icon="settings",
        )
    ]


navigation.register("global", _global_settings, order=10)

app_name = "smtpadmin"
urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("organization/", OrganizationSheet.as_view(), name="organization"),
    path("tree/<slug:key>/", views.TreeChildren.as_view(), name="tree-children"),
    path("pickers/<slug:picker>/", pickers.PickerSearch.as_view(), name="picker"),
]
