"""Console pages of the relay (URL namespace "relay", mounted at /relay/): Queue Viewer with
each queue's messages, message properties, Find Messages with bulk actions, the reply rules,
and the Message Tracking Center, all under Tools in the console tree."""

from __future__ import annotations

from typing import Any

from django.urls import path, reverse

from relay.console import dashboard, find, jobs, messages, queues, rules, tracking  # noqa: F401
from smtpadmin.navigation import Node, navigation


def tool_nodes(user: Any) -> list[Node]:
    return [
        Node(
            key="queue-viewer",
            label="Queue Viewer",
            url=reverse("relay:queue-viewer"),
            icon="tools",
            children=[
                Node(
                    key="find-messages",
                    label="Find Messages",
                    url=reverse("relay:find-messages"),
                    icon="tools",
                ),
                Node(
                    key="bulk-jobs",
                    label="Bulk Jobs",
                    url=reverse("relay:jobs"),
                    icon="tools",
                ),
                Node(
                    key="reply-rules",
                    label="Reply Rules",
                    url=reverse("relay:reply-rules"),
                    icon="settings",
                ),
            ],
        ),
        Node(
            key="tracking-center",
            label="Message Tracking Center",
            url=reverse("relay:tracking-center"),
            icon="tools",
        ),
    ]


navigation.register("tools", tool_nodes, order=30)

app_name = "relay"
urlpatterns = [
    path("queues/", queues.QueueViewer.as_view(), name="queue-viewer"),
    path("queues/<int:pk>/", queues.QueueMessages.as_view(), name="queue"),
    *[
        path(
            f"queues/<int:pk>/{verb}/", queues.QueueAction.as_view(verb=verb), name=f"queue-{verb}"
        )
        for verb in queues.QUEUE_ACTIONS
    ],
    path("queues/<int:pk>/delete/", queues.QueueDelete.as_view(), name="queue-delete"),
    path("messages/<int:pk>/", messages.MessageProperties.as_view(), name="message"),
    path("messages/<int:pk>/eml/", messages.MessageDownload.as_view(), name="message-eml"),
    *[
        path(
            f"messages/<int:pk>/{verb}/",
            messages.MessageAction.as_view(verb=verb),
            name=f"message-{verb}",
        )
        for verb in messages.MESSAGE_ACTIONS
    ],
    path("messages/<int:pk>/delete/", messages.MessageDelete.as_view(), name="message-delete"),
    path("find/", find.FindMessages.as_view(), name="find-messages"),
    path("find/confirm/", find.BulkConfirm.as_view(), name="bulk-confirm"),
    path("jobs/", jobs.JobList.as_view(), name="jobs"),
    path("jobs/<int:pk>/", jobs.JobPage.as_view(), name="job"),
    path("jobs/<int:pk>/resume/", jobs.JobResume.as_view(), name="job-resume"),
    path("reply-rules/", rules.ReplyRuleList.as_view(), name="reply-rules"),
    path("reply-rules/new/", rules.NewReplyRule.as_view(), name="reply-rule-new"),
    path("reply-rules/<int:pk>/", rules.ReplyRuleSheet.as_view(), name="reply-rule"),
    path("reply-rules/<int:pk>/delete/", rules.ReplyRuleDelete.as_view(), name="reply-rule-delete"),
    path("tracking/", tracking.TrackingCenter.as_view(), name="tracking-center"),
    path("tracking/history/", tracking.MessageHistory.as_view(), name="message-history"),
]
