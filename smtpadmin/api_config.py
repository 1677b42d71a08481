"""``GET /api/v1/config/export``: the configuration file, as ``manage.py exportconfig`` writes
it without secrets, for every role."""

from __future__ import annotations

from django.http import HttpResponse
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.views import APIView

from smtpadmin import configio
from smtpadmin.registry import api
from smtpadmin.roles import Role


class ConfigExportView(APIView):
    """The whole organization's configuration (no secrets), in a stable order."""

    read_role = Role.VIEW_ONLY

    @extend_schema(
        operation_id="config_export",
        tags=["configuration"],
        summary="Export the configuration (without secrets)",
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(configio.export_text(), content_type="application/json")


api.add_url(path("config/export", ConfigExportView.as_view(), name="config-export"))
