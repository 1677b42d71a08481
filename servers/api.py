"""/api/v1/ resources of the servers app: routing groups, servers, virtual servers (with their
current sessions), accepted domains, mailboxes, SMTP credentials and certificates."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.db import transaction
from django.urls import re_path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.generics import get_object_or_404
from rest_framework.request import Request
from rest_framework.response import Response

from servers.models import (
    AcceptedDomain,
    Certificate,
    Mailbox,
    RoutingGroup,
    Server,
    SmtpCredential,
    SmtpSession,
    VirtualServer,
)
from servers.models.virtual_server import PROFILE_CHOICES, PROFILES
from smtpadmin.api import AuditedModelViewSet, ModelCleanSerializer
from smtpadmin.registry import api
from smtpadmin.roles import Role


class RoutingGroupSerializer(ModelCleanSerializer):
    """A routing group: the servers a connector of scope "routing group" is limited to."""

    class Meta:
        model = RoutingGroup
        fields = ["id", "name", "created_at"]


class RoutingGroupViewSet(AuditedModelViewSet):
    queryset = RoutingGroup.objects.all()
    serializer_class = RoutingGroupSerializer
    filterset_fields = ["name"]
    search_fields = ["name"]
    ordering_fields = ["name", "id"]


class ServerSerializer(ModelCleanSerializer):
    """A host running a relay worker; its status comes from the worker's heartbeat."""

    status = serializers.ChoiceField(choices=Server.Status.choices, read_only=True)

    class Meta:
        model = Server
        fields = [
            "id",
            "name",
            "fqdn",
            "routing_group",
            "drop_directory",
            "status",
            "version",
            "address",
            "last_seen",
            "created_at",
        ]


class ServerViewSet(AuditedModelViewSet):
    queryset = Server.objects.all()
    serializer_class = ServerSerializer
    filterset_fields = ["name", "routing_group"]
    search_fields = ["name", "fqdn"]
    ordering_fields = ["name", "id", "last_seen"]


class OutboundPasswordFields(serializers.Serializer):
    """The password for AUTH to the next hop (virtual servers and connectors): write-only;
    answers say only whether one is set. An empty string removes it."""

    outbound_password = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=500, trim_whitespace=False
    )
    has_outbound_password = serializers.SerializerMethodField()

    def get_has_outbound_password(self, obj: Any) -> bool:
        return bool(obj.outbound_password)


class VirtualServerSerializer(OutboundPasswordFields, ModelCleanSerializer):
    """An SMTP virtual server: one listener (IP address, port) on one server."""

    profile = serializers.ChoiceField(
        choices=PROFILE_CHOICES,
        write_only=True,
        required=False,
        help_text="Defaults to apply when creating: Exchange 2003 (default) or IIS 6 SMTP.",
    )
    binding = serializers.CharField(read_only=True)

    class Meta:
        model = VirtualServer
        exclude = ["state_changed_at"]

    def validate_profile(self, value: str) -> str:
        if self.instance is not None:
            raise serializers.ValidationError("A profile applies only when creating.")
        return value

    def initial_fields(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = dict(attrs)
        profile = attrs.pop("profile", "exchange2003")
        return {**PROFILES[profile], **attrs}


class VirtualServerUpdateSerializer(VirtualServerSerializer):
    """A change to an SMTP virtual server (a profile applies only when creating)."""

    profile = None  # type: ignore[assignment]


@extend_schema_view(
    update=extend_schema(request=VirtualServerUpdateSerializer, responses=VirtualServerSerializer),
    partial_update=extend_schema(
        request=VirtualServerUpdateSerializer, responses=VirtualServerSerializer
    ),
)
class VirtualServerViewSet(AuditedModelViewSet):
    queryset = VirtualServer.objects.select_related("server").all()
    serializer_class = VirtualServerSerializer
    filterset_fields = ["server", "name", "port", "desired_state", "state"]
    search_fields = ["name"]
    ordering_fields = ["name", "id", "port", "server__name"]

    def get_serializer_class(self) -> Any:
        if self.action in ("update", "partial_update"):
            return VirtualServerUpdateSerializer
        return VirtualServerSerializer

    def _set_state(self, request: Request, state: str) -> Response:
        virtual_server = self.get_object()
        virtual_server.set_desired_state(state, by=request.user)
        return Response(self.get_serializer(virtual_server).data, status=status.HTTP_200_OK)

    @extend_schema(request=None, responses=VirtualServerSerializer)
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str | None = None) -> Response:
        """Set the desired state to running; the relay worker applies it."""
        return self._set_state(request, VirtualServer.DesiredState.RUNNING)

    @extend_schema(request=None, responses=VirtualServerSerializer)
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, pk: str | None = None) -> Response:
        """Set the desired state to stopped: the listener closes."""
        return self._set_state(request, VirtualServer.DesiredState.STOPPED)

    @extend_schema(request=None, responses=VirtualServerSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str | None = None) -> Response:
        """Set the desired state to paused: new connections get 421, sessions continue."""
        return self._set_state(request, VirtualServer.DesiredState.PAUSED)


class SmtpSessionSerializer(serializers.ModelSerializer):
    """A live SMTP session of a virtual server, as its relay worker reports it (read-only)."""

    class Meta:
        model = SmtpSession
        fields = [
            "id",
            "virtual_server",
            "client_address",
            "client_port",
            "client_name",
            "helo",
            "auth_user",
            "tls",
            "connected_at",
            "messages",
            "terminate_requested_at",
            "terminate_requested_by",
        ]
        read_only_fields = fields


class TerminateAllSerializer(serializers.Serializer):
    """What Terminate All asked the relay worker to do."""

    virtual_server = serializers.IntegerField()
    requested = serializers.IntegerField(
        help_text="How many sessions were asked to end (those already ending are not counted)."
    )


VIRTUAL_SERVER_ID = OpenApiParameter(
    "virtual_server_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The virtual server."
)


@extend_schema_view(
    list=extend_schema(
        parameters=[VIRTUAL_SERVER_ID],
        description="The live sessions of the virtual server, as its relay worker reports "
        "them every second.",
    ),
    retrieve=extend_schema(parameters=[VIRTUAL_SERVER_ID], description="One live session."),
)
class SmtpSessionViewSet(viewsets.ReadOnlyModelViewSet):
    """Current Sessions of a virtual server; Terminate and Terminate All (Administrator and
    Full Administrator). The relay worker ends the sessions within seconds."""

    serializer_class = SmtpSessionSerializer
    search_fields = ["client_address", "client_name", "helo", "auth_user"]
    ordering_fields = ["connected_at", "client_address", "messages", "id"]
    filterset_fields = ["tls", "auth_user"]

    @cached_property
    def virtual_server(self) -> VirtualServer:
        # Unknown (or non-numeric) ids are a 404, not an empty list.
        return get_object_or_404(VirtualServer.objects.all(), pk=self.kwargs["virtual_server_id"])

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request
            return SmtpSession.objects.none()
        return SmtpSession.objects.filter(virtual_server=self.virtual_server)

    @extend_schema(
        request=None,
        responses={status.HTTP_202_ACCEPTED: SmtpSessionSerializer},
        parameters=[VIRTUAL_SERVER_ID],
    )
    @action(detail=True, methods=["post"])
    def terminate(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Ask the relay worker to end this session (audited). Asking again changes nothing."""
        session = self.get_object()
        session.request_termination(by=request.user)
        current = SmtpSession.objects.filter(pk=session.pk).first()
        if current is None:
            return Response({"detail": "The session has ended."}, status=status.HTTP_404_NOT_FOUND)
        return Response(self.get_serializer(current).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=None,
        responses={status.HTTP_202_ACCEPTED: TerminateAllSerializer},
        parameters=[VIRTUAL_SERVER_ID],
    )
    @action(detail=False, methods=["post"], url_path="terminate-all")
    def terminate_all(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Ask the relay worker to end every session of this virtual server (audited)."""
        requested = SmtpSession.request_termination_all(self.virtual_server, by=request.user)
        return Response(
            {"virtual_server": self.virtual_server.pk, "requested": requested},
            status=status.HTTP_202_ACCEPTED,
        )


class AcceptedDomainSerializer(ModelCleanSerializer):
    """A domain this organization receives mail for. Making one the default takes the flag
    from the previous default."""

    # The view moves the flag from the old default, so "one default" is not a validation error.
    constraints_enforced_by_view = ("is_default",)

    class Meta:
        model = AcceptedDomain
        fields = ["id", "domain", "type", "is_default", "created_at", "modified_at"]


class AcceptedDomainViewSet(AuditedModelViewSet):
    queryset = AcceptedDomain.objects.all()
    serializer_class = AcceptedDomainSerializer
    filterset_fields = ["domain", "type", "is_default"]
    search_fields = ["domain"]
    ordering_fields = ["domain", "id", "type"]

    def perform_create(self, serializer: Any) -> None:
        with transaction.atomic():
            if serializer.validated_data.get("is_default"):
                AcceptedDomain.clear_default(by=self.request.user)
            super().perform_create(serializer)

    def perform_update(self, serializer: Any) -> None:
        with transaction.atomic():
            if serializer.validated_data.get("is_default"):
                AcceptedDomain.clear_default(by=self.request.user, keep=serializer.instance.pk)
            super().perform_update(serializer)


class MailboxSerializer(ModelCleanSerializer):
    """A local recipient in an authoritative accepted domain (the domain is derived)."""

    domain: Any = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = Mailbox
        fields = ["id", "address", "domain", "display_name", "enabled", "created_at"]


class MailboxViewSet(AuditedModelViewSet):
    queryset = Mailbox.objects.all()
    serializer_class = MailboxSerializer
    filterset_fields = ["address", "domain", "enabled"]
    search_fields = ["address", "display_name"]
    ordering_fields = ["address", "id"]


class SmtpCredentialSerializer(ModelCleanSerializer):
    """A user name and password that SMTP clients present with AUTH PLAIN / LOGIN."""

    password = serializers.CharField(
        write_only=True,
        required=False,
        min_length=8,
        max_length=1024,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Write-only: required when creating; send it again only to change it.",
    )
    sent_this_hour = serializers.SerializerMethodField(
        help_text="Messages counted against the send limit in the current hour (UTC), by "
        "every relay process: each MAIL FROM the relay accepted from this credential."
    )

    class Meta:
        model = SmtpCredential
        fields = [
            "id",
            "username",
            "password",
            "enabled",
            "virtual_servers",
            "send_limit_per_hour",
            "sent_this_hour",
            "last_used_at",
            "failed_logins",
            "locked_until",
            "created_at",
        ]

    def get_sent_this_hour(self, credential: SmtpCredential) -> int:
        return credential.sent_this_hour()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.instance is None and not attrs.get("password"):
            raise serializers.ValidationError({"password": ["A new credential needs a password."]})
        return super().validate(attrs)

    def _candidate(self, attrs: dict[str, Any]) -> Any:
        password = attrs.get("password")
        candidate = super()._candidate({k: v for k, v in attrs.items() if k != "password"})
        if password:
            candidate.set_password(password)
        return candidate


class SmtpCredentialViewSet(AuditedModelViewSet):
    queryset = SmtpCredential.objects.prefetch_related("virtual_servers").all()
    serializer_class = SmtpCredentialSerializer
    write_role = Role.ADMINISTRATOR
    filterset_fields = ["username", "enabled"]
    search_fields = ["username"]
    ordering_fields = ["username", "id", "last_used_at"]

    @extend_schema(
        request=None,
        responses={
            200: SmtpCredentialSerializer,
            403: OpenApiResponse(description="Only Full Administrators may unlock."),
            404: OpenApiResponse(description="No such SMTP credential."),
        },
    )
    @action(detail=True, methods=["post"], write_role=Role.FULL)
    def unlock(self, request: Request, pk: str | None = None) -> Response:
        """Lift the credential's AUTH locks and forget its failed logins (audited)."""
        credential = self.get_object()
        credential.unlock(by=request.user)
        return Response(self.get_serializer(credential).data)


class CertificateSerializer(ModelCleanSerializer):
    """A TLS certificate chain and its private key (write-only: never shown again)."""

    private_key_pem = serializers.CharField(
        write_only=True,
        required=False,
        max_length=100_000,
        trim_whitespace=False,
        style={"base_template": "textarea.html"},
        help_text="Write-only: never shown again after upload.",
    )
    certificate_pem = serializers.CharField(
        required=False, max_length=200_000, trim_whitespace=False
    )
    is_expired = serializers.BooleanField(read_only=True)
    generate_self_signed = serializers.BooleanField(
        write_only=True,
        required=False,
        default=False,
        help_text="Create a self-signed certificate for common_name instead of uploading PEM.",
    )
    common_name = serializers.CharField(write_only=True, required=False, max_length=253)
    alt_names = serializers.ListField(
        child=serializers.CharField(max_length=253),
        write_only=True,
        required=False,
        max_length=100,
    )

    class Meta:
        model = Certificate
        fields = [
            "id",
            "name",
            "certificate_pem",
            "private_key_pem",
            "subject",
            "issuer",
            "sans",
            "not_before",
            "not_after",
            "fingerprint_sha256",
            "is_expired",
            "created_at",
            "generate_self_signed",
            "common_name",
            "alt_names",
        ]
        read_only_fields = [
            "subject",
            "issuer",
            "sans",
            "not_before",
            "not_after",
            "fingerprint_sha256",
            "created_at",
        ]

    _generated = ("generate_self_signed", "common_name", "alt_names")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("generate_self_signed"):
            if self.instance is not None:
                raise serializers.ValidationError(
                    {"generate_self_signed": ["Generate a new certificate instead."]}
                )
            if not attrs.get("common_name"):
                raise serializers.ValidationError(
                    {"common_name": ["A self-signed certificate needs a common name."]}
                )
        else:
            ignored = [f for f in ("common_name", "alt_names") if f in attrs]
            if ignored:
                raise serializers.ValidationError(
                    {f: ["This applies only with generate_self_signed."] for f in ignored}
                )
        if not attrs.get("generate_self_signed") and self.instance is None:
            missing = {
                f: ["Paste the PEM text, or generate a self-signed certificate."]
                for f in ("certificate_pem", "private_key_pem")
                if not attrs.get(f)
            }
            if missing:
                raise serializers.ValidationError(missing)
        return super().validate(attrs)

    def _candidate(self, attrs: dict[str, Any]) -> Any:
        plain = {k: v for k, v in attrs.items() if k not in self._generated}
        if attrs.get("generate_self_signed"):
            from django.core.exceptions import ValidationError as DjangoValidationError

            try:
                generated = Certificate.generate_self_signed(
                    name=attrs.get("name", ""),
                    common_name=attrs["common_name"],
                    alt_names=attrs.get("alt_names", []),
                )
            except DjangoValidationError as exc:
                raise serializers.ValidationError({"common_name": exc.messages}) from None
            plain["certificate_pem"] = generated.certificate_pem
            plain["private_key_pem"] = generated.private_key_pem
        return super()._candidate(plain)


class CertificateUpdateSerializer(CertificateSerializer):
    """A change to a certificate: new PEM text or a new name (generating is for new ones)."""

    generate_self_signed = None  # type: ignore[assignment]
    common_name = None  # type: ignore[assignment]
    alt_names = None  # type: ignore[assignment]

    class Meta(CertificateSerializer.Meta):
        fields = [
            f
            for f in CertificateSerializer.Meta.fields
            if f not in ("generate_self_signed", "common_name", "alt_names")
        ]


@extend_schema_view(
    update=extend_schema(request=CertificateUpdateSerializer, responses=CertificateSerializer),
    partial_update=extend_schema(
        request=CertificateUpdateSerializer, responses=CertificateSerializer
    ),
)
class CertificateViewSet(AuditedModelViewSet):
    queryset = Certificate.objects.all()
    serializer_class = CertificateSerializer

    filterset_fields = ["name"]
    search_fields = ["name", "subject"]
    ordering_fields = ["name", "id", "not_after"]

    def get_serializer_class(self) -> Any:
        if self.action in ("update", "partial_update"):
            return CertificateUpdateSerializer
        return CertificateSerializer


api.register("routing-groups", RoutingGroupViewSet)
api.register("servers", ServerViewSet)
api.register("virtual-servers", VirtualServerViewSet)
api.register(
    r"virtual-servers/(?P<virtual_server_id>[^/.]+)/sessions",
    SmtpSessionViewSet,
    basename="virtual-server-sessions",
)
# The same endpoints without the trailing slash, as the issue spells them (a POST cannot be
# redirected to the slashed URL); kept out of the schema, which documents one path each.
SESSION_ALIASES: list[tuple[str, dict[str, Any]]] = [
    (r"sessions", {"get": "list"}),
    (r"sessions/(?P<pk>[^/.]+)/terminate", {"post": "terminate"}),
    (r"sessions/terminate-all", {"post": "terminate_all"}),
]
for pattern, actions in SESSION_ALIASES:
    api.add_url(
        re_path(
            rf"^virtual-servers/(?P<virtual_server_id>[^/.]+)/{pattern}$",
            SmtpSessionViewSet.as_view(actions, schema=None),
        )
    )
api.register("accepted-domains", AcceptedDomainViewSet)
api.register("mailboxes", MailboxViewSet)
api.register("smtp-credentials", SmtpCredentialViewSet)
api.register("certificates", CertificateViewSet)
