"""/api/v1/ resources of the relay: ``queues`` (Queue Viewer), ``messages`` (with Find
Messages' filters and bulk actions) and ``tracking-events`` (Message Tracking Center).

Reading is for every administrative role; the actions (POST) are for Administrators and Full
Administrators, as ``smtpadmin.roles.RolePermission`` decides for every POST. The actions
themselves are in ``relay.admin.actions``, shared with the console.
"""

from __future__ import annotations

import json
from typing import Any

from django.db.models import Prefetch, QuerySet
from django.http import HttpResponse
from django.urls import re_path
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from relay.admin import actions, jobs
from relay.admin.paging import COUNT_CAP, capped_count
from relay.admin.search import (
    MessageFilter,
    TrackingFilter,
    message_history,
    with_derived_state,
    with_state,
)
from relay.admin.viewer import ensure_system_queues, outbound_disabled, queue_list
from relay.api_serializers import (
    BulkActionSerializer,
    BulkJobSerializer,
    BulkResultSerializer,
    DeletedSerializer,
    DeleteOptionsSerializer,
    MessageDetailSerializer,
    MessageSerializer,
    QueueSerializer,
    TrackingEventSerializer,
)
from relay.queue.models import BulkJob, LinkQueue, Message, QueueEntry, TrackingEvent
from smtpadmin.registry import api

# --- queues ------------------------------------------------------------------------------


def _deleted(result: actions.Deleted, ndr: bool) -> dict[str, Any]:
    return {
        "messages": result.messages,
        "recipients": result.recipients,
        "ndr": ndr,
        "dsns": list(result.dsns),
        "dsn_errors": result.dsn_errors,
    }


def _accepted(job: BulkJob, request: Request) -> Response:
    """202: the job runs in the background; its URL tells how far it got."""
    data = BulkJobSerializer(job, context={"request": request}).data
    return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["url"]})


# Answered when an action concerns more messages than one request does: the job.
JOB_ACCEPTED = OpenApiResponse(
    BulkJobSerializer,
    description="More messages than one request handles: the action runs as a background "
    "job; ``url`` (also the Location header) shows its progress.",
)


def _ndr_of(request: Request) -> bool:
    data = request.data if request.data not in (None, "") else {}
    serializer = DeleteOptionsSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return bool(serializer.validated_data["ndr"])


class QueueViewSet(viewsets.ReadOnlyModelViewSet):
    """Queue Viewer: every link queue and the system queues, with Freeze, Unfreeze, Force
    Connection (retry) and Delete All Messages (with or without NDR)."""

    serializer_class = QueueSerializer
    lookup_value_regex = r"[0-9]+"
    filterset_fields = ["kind", "frozen", "connector", "server"]
    search_fields = ["name", "domain", "key"]
    ordering_fields = [
        "id",
        "name",
        "message_count",
        "total_size",
        "oldest_message_at",
        "next_retry_at",
    ]

    def get_queryset(self) -> QuerySet[LinkQueue]:
        return queue_list(self._now)

    @property
    def _now(self) -> Any:
        if not hasattr(self, "_now_value"):
            self._now_value = timezone.now()
        return self._now_value

    def get_serializer_context(self) -> dict[str, Any]:
        context = dict(super().get_serializer_context())
        context.update(now=self._now, outbound_disabled=outbound_disabled())
        return context

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        ensure_system_queues()
        return super().list(request, *args, **kwargs)

    def _answer(self, queue: LinkQueue) -> Response:
        self._now_value = timezone.now()  # after the action: what it made due is due
        fresh = self.get_queryset().get(pk=queue.pk)
        return Response(self.get_serializer(fresh).data)

    @extend_schema(request=None, responses=QueueSerializer)
    @action(detail=True, methods=["post"])
    def freeze(self, request: Request, pk: str | None = None) -> Response:
        """Freeze the queue: no message leaves it; new ones still join it."""
        queue = self.get_object()
        actions.freeze_queue(queue, request.user)
        return self._answer(queue)

    @extend_schema(request=None, responses=QueueSerializer)
    @action(detail=True, methods=["post"])
    def unfreeze(self, request: Request, pk: str | None = None) -> Response:
        """Unfreeze the queue: delivery resumes."""
        queue = self.get_object()
        actions.unfreeze_queue(queue, request.user)
        return self._answer(queue)

    @extend_schema(request=None, responses={200: QueueSerializer, 202: JOB_ACCEPTED})
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        """Force Connection: every waiting message is due now, ignoring the retry timer (a
        background job when the queue holds many)."""
        queue = self.get_object()
        if jobs.many_in_queue(queue):
            return _accepted(jobs.start("retry", request.user, queue=queue), request)
        actions.retry_queue_now(queue, request.user)
        return self._answer(queue)

    @extend_schema(
        request=DeleteOptionsSerializer, responses={200: DeletedSerializer, 202: JOB_ACCEPTED}
    )
    @action(detail=True, methods=["post"], url_path="delete-messages")
    def delete_messages(self, request: Request, pk: str | None = None) -> Response:
        """Delete All Messages of the queue, with an NDR to each sender when ``ndr`` is true
        (a background job when the queue holds many)."""
        queue = self.get_object()
        ndr = _ndr_of(request)
        if jobs.many_in_queue(queue):
            return _accepted(jobs.start("delete", request.user, queue=queue, ndr=ndr), request)
        result = actions.delete_queue_messages(queue, request.user, ndr)
        return Response(DeletedSerializer(_deleted(result, ndr)).data)


# --- messages ----------------------------------------------------------------------------


class EmlRenderer(BaseRenderer):
    """The message as stored (``message/rfc822``); errors are JSON."""

    media_type = "message/rfc822"
    format = "eml"
    charset = None

    def render(
        self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None
    ) -> Any:
        if isinstance(data, bytes):
            return data
        return json.dumps(data).encode()


class MessagePagination(CursorPagination):
    """Messages a page at a time by a cursor (the position after the last one sent), so a
    page costs the same however many messages the queues hold and messages arriving while a
    client pages neither repeat nor skip one. ``count`` is exact up to 10,000; beyond,
    ``count_capped`` is true and ``count`` says 10,000."""

    ordering = ("-received_at", "-id")
    count_cap = COUNT_CAP

    def decode_cursor(self, request: Request) -> Any:
        try:
            return super().decode_cursor(request)
        except NotFound:
            # A cursor is only ever one of our ``next`` / ``previous`` links.
            raise serializers.ValidationError(
                {"cursor": ["Not a cursor of this list: follow next or previous."]}
            ) from None

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        self.count = capped_count(queryset.values("pk"), self.count_cap)
        return super().paginate_queryset(queryset, request, view)

    def get_paginated_response(self, data: Any) -> Response:
        return Response(
            {
                "count": self.count.value,
                "count_capped": self.count.capped,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        answer = super().get_paginated_response_schema(schema)
        answer["required"] = ["count", "count_capped", "results"]
        answer["properties"] = {
            "count": {
                "type": "integer",
                "example": 123,
                "description": f"Messages found, exact up to {COUNT_CAP:,}.",
            },
            "count_capped": {
                "type": "boolean",
                "description": f"More than {COUNT_CAP:,} were found; ``count`` is the cap.",
            },
            **answer["properties"],
        }
        return answer


class MessageViewSet(viewsets.ReadOnlyModelViewSet):
    """Messages with Find Messages' filters (and the derived ``state``), their properties,
    the stored .eml, and Freeze, Unfreeze, Delete (with or without NDR), one by one or in
    bulk on everything a filter finds."""

    lookup_value_regex = r"[0-9]+"
    filterset_class = MessageFilter
    pagination_class = MessagePagination
    search_fields = ["=queue_id", "message_id", "sender", "subject"]
    ordering_fields = ["id", "received_at", "size", "sender"]
    ordering = ["-received_at", "-id"]

    def get_serializer_class(self) -> Any:
        if self.action == "retrieve":
            return MessageDetailSerializer
        return MessageSerializer

    def get_queryset(self) -> QuerySet[Message]:
        messages = Message.objects.all()
        if self.action not in ("retrieve", "content"):
            messages = messages.defer("content")
        if self.action != "list":
            # One message: the database works out its state. A list page's rows get theirs
            # from their prefetched entries and recipients (``paginate_queryset``).
            messages = with_state(messages)
        return messages.prefetch_related(
            "recipients", Prefetch("entries", QueueEntry.objects.select_related("queue"))
        )

    def paginate_queryset(self, queryset: Any) -> Any:
        page = super().paginate_queryset(queryset)
        return None if page is None else with_derived_state(page)

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        if isinstance(getattr(self.request, "accepted_renderer", None), EmlRenderer):
            # An error is JSON, and says so, even when the client asked for the .eml.
            self.request.accepted_renderer = JSONRenderer()
            self.request.accepted_media_type = JSONRenderer.media_type
        return response

    def _answer(self, message: Message) -> Response:
        fresh = self.get_queryset().get(pk=message.pk)
        return Response(MessageSerializer(fresh, context=self.get_serializer_context()).data)

    @extend_schema(request=None, responses=MessageSerializer)
    @action(detail=True, methods=["post"])
    def freeze(self, request: Request, pk: str | None = None) -> Response:
        """Freeze the message in every queue it waits in."""
        message = self.get_object()
        actions.freeze_message(message, request.user)
        return self._answer(message)

    @extend_schema(request=None, responses=MessageSerializer)
    @action(detail=True, methods=["post"])
    def unfreeze(self, request: Request, pk: str | None = None) -> Response:
        """Unfreeze the message: back to Ready (or Retry if it was tried before)."""
        message = self.get_object()
        actions.unfreeze_message(message, request.user)
        return self._answer(message)

    @extend_schema(request=DeleteOptionsSerializer, responses=DeletedSerializer)
    @action(detail=True, methods=["post"], url_path="delete", url_name="delete")
    def delete_message(self, request: Request, pk: str | None = None) -> Response:
        """Delete the message from every queue (its waiting recipients become "deleted"),
        with an NDR to the sender when ``ndr`` is true."""
        message = self.get_object()
        ndr = _ndr_of(request)
        result = actions.delete_message(message, request.user, ndr)
        return Response(DeletedSerializer(_deleted(result, ndr)).data)

    @extend_schema(
        responses={(200, "message/rfc822"): OpenApiTypes.BINARY},
        description="The message as stored, with our Received header.",
    )
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer, EmlRenderer])
    def content(self, request: Request, pk: str | None = None) -> HttpResponse:
        """Download the message (.eml)."""
        message = self.get_object()
        response = HttpResponse(message.raw, content_type="message/rfc822")
        response["Content-Disposition"] = f'attachment; filename="{message.queue_id}.eml"'
        return response

    @extend_schema(
        request=BulkActionSerializer, responses={200: BulkResultSerializer, 202: JOB_ACCEPTED}
    )
    @action(detail=False, methods=["post"])
    def bulk(self, request: Request) -> Response:
        """Freeze, unfreeze or delete every message the filter finds (the same filters as
        the list). Deleting with ``ndr`` sends an NDR to each sender. When the filter finds
        many, the action runs as a background job (202 with the job)."""
        serializer = BulkActionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        found: MessageFilter = serializer.validated_data["filter"]
        if jobs.many_found(found):
            job = jobs.start(
                serializer.validated_data["action"],
                request.user,
                criteria={k: str(v) for k, v in found.data.items()},
                ndr=serializer.validated_data["ndr"],
                description=found.describe(),
            )
            return _accepted(job, request)
        outcome = actions.bulk_action(
            found.qs,
            serializer.validated_data["action"],
            request.user,
            ndr=serializer.validated_data["ndr"],
            description=found.describe(),
        )
        return Response(BulkResultSerializer(outcome.__dict__).data, status=status.HTTP_200_OK)


# --- bulk jobs ---------------------------------------------------------------------------


class BulkJobViewSet(viewsets.ReadOnlyModelViewSet):
    """Bulk actions running in the background (answered 202 by the actions on many
    messages), newest first: their progress and outcome."""

    queryset = BulkJob.objects.all()
    serializer_class = BulkJobSerializer
    lookup_value_regex = r"[0-9]+"
    filterset_fields = ["state", "action", "queue"]
    ordering_fields = ["id", "created_at"]
    ordering = ["-created_at", "-id"]


# --- tracking events ---------------------------------------------------------------------


class TrackingEventViewSet(viewsets.ReadOnlyModelViewSet):
    """Message Tracking Center: search by Message-ID, queue id, sender, recipient, server,
    time range and subject (when subject logging was on)."""

    queryset = TrackingEvent.objects.all()
    serializer_class = TrackingEventSerializer
    lookup_value_regex = r"[0-9]+"
    filterset_class = TrackingFilter
    ordering_fields = ["id", "at"]
    ordering = ["-at", "-id"]

    @extend_schema(
        parameters=[
            OpenApiParameter("queue_id", OpenApiTypes.STR, description="A queue id."),
            OpenApiParameter("message_id", OpenApiTypes.STR, description="A Message-ID."),
        ],
        responses=TrackingEventSerializer(many=True),
    )
    @action(detail=False, methods=["get"], filter_backends=[], pagination_class=None)
    def history(self, request: Request) -> Response:
        """The history of one message across servers, oldest first: every event of the
        queue id and of the Message-ID it carried."""
        queue_id = str(request.query_params.get("queue_id", "")).strip()[:20]
        message_id = str(request.query_params.get("message_id", "")).strip()[:500]
        if "\x00" in queue_id + message_id:
            raise serializers.ValidationError({"queue_id": ["Null characters are not allowed."]})
        if not queue_id and not message_id:
            raise serializers.ValidationError({"queue_id": ["Give a queue id or a Message-ID."]})
        events = message_history(queue_id, message_id)[:1000]
        return Response(self.get_serializer(events, many=True).data)


api.register("queues", QueueViewSet, basename="queue")
api.register("messages", MessageViewSet, basename="message")
api.register("tracking-events", TrackingEventViewSet, basename="tracking-event")
api.register("jobs", BulkJobViewSet, basename="bulk-job")

# The action paths without the trailing slash, as DESIGN spells them (a POST cannot be
# redirected to the slashed URL); kept out of the schema, which documents one path each.
_ID = r"(?P<pk>[0-9]+)"
for pattern, view in [
    (rf"^queues/{_ID}/freeze$", QueueViewSet.as_view({"post": "freeze"}, schema=None)),
    (rf"^queues/{_ID}/unfreeze$", QueueViewSet.as_view({"post": "unfreeze"}, schema=None)),
    (rf"^queues/{_ID}/retry$", QueueViewSet.as_view({"post": "retry"}, schema=None)),
    (
        rf"^queues/{_ID}/delete-messages$",
        QueueViewSet.as_view({"post": "delete_messages"}, schema=None),
    ),
    (rf"^messages/{_ID}/freeze$", MessageViewSet.as_view({"post": "freeze"}, schema=None)),
    (rf"^messages/{_ID}/unfreeze$", MessageViewSet.as_view({"post": "unfreeze"}, schema=None)),
    (
        rf"^messages/{_ID}/delete$",
        MessageViewSet.as_view({"post": "delete_message"}, schema=None),
    ),
    (r"^messages/bulk$", MessageViewSet.as_view({"post": "bulk"}, schema=None)),
]:
    api.add_url(re_path(pattern, view))
