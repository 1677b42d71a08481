"""Shared API pieces: the exception handler that keeps every failure a clean JSON answer."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, IntegrityError
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def as_drf_validation_error(exc: DjangoValidationError) -> ValidationError:
    if hasattr(exc, "error_dict"):
        return ValidationError(
            {("non_field_errors" if k == "__all__" else k): v for k, v in exc.message_dict.items()}
        )
    return ValidationError({"non_field_errors": exc.messages})


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        exc = as_drf_validation_error(exc)
    elif isinstance(exc, IntegrityError):
        # A constraint the validation did not see (a race between two writers, say).
        logger.warning("integrity error in API: %s", exc)
        return Response(
            {"non_field_errors": ["This conflicts with existing configuration; reload and retry."]},
            status=status.HTTP_409_CONFLICT,
        )
    elif isinstance(exc, DatabaseError):
        logger.exception("database error in API")
        return Response(
            {"detail": "The database could not store this value."},
            status=status.HTTP_400_BAD_REQUEST,
        )
    return drf_exception_handler(exc, context)
