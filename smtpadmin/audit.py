"""Writing the audit log: one entry per changed field, secrets recorded as "changed"."""

from __future__ import annotations

import hashlib
from typing import Any

from django.db import models, transaction
from django.db.models import ProtectedError

from smtpadmin.models import AuditEntry


def configuration_fields(model: type[models.Model] | models.Model) -> list[str]:
    """The fields a configuration save (form or API) writes: every concrete field except the
    ``runtime_fields`` the relay and delivery workers keep up to date, so that saving a sheet
    can never put back a heartbeat or a reported state read a moment earlier."""
    runtime = set(getattr(model, "runtime_fields", ()))
    return [
        f.name for f in model._meta.concrete_fields if not f.primary_key and f.name not in runtime
    ]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return str(value)


def snapshot(instance: models.Model) -> dict[str, str]:
    """Field name -> displayed value, including many-to-many ids and an ``audit_extra()`` hook.

    Secret fields (``audit_secret_fields`` on the model) hold a digest so that a change can be
    seen without the value ever reaching the log.
    """
    secret_fields: set[str] = set(getattr(instance, "audit_secret_fields", ()))
    skip: set[str] = {
        *getattr(instance, "audit_skip_fields", ()),
        *getattr(instance, "runtime_fields", ()),
        "id",
    }
    values: dict[str, str] = {}
    for field in instance._meta.concrete_fields:
        # Timestamps the database keeps by itself are not changes anyone made.
        automatic = getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)
        if field.name in skip or automatic:
            continue
        raw = getattr(instance, field.attname)
        if field.name in secret_fields:
            values[field.name] = hashlib.sha256(_text(raw).encode()).hexdigest() if raw else ""
        else:
            values[field.name] = _text(raw)
    if instance.pk is not None:
        for m2m in instance._meta.many_to_many:
            ids = sorted(getattr(instance, m2m.name).values_list("pk", flat=True))
            values[m2m.name] = _text(ids)
    extra = getattr(instance, "audit_extra", None)
    if callable(extra):
        values.update(extra())
    return values


def _entry(user: Any, action: str, instance: models.Model, **fields: str) -> AuditEntry:
    is_user = user is not None and getattr(user, "is_authenticated", False)
    return AuditEntry(
        user=user if is_user else None,
        username=user.get_username() if is_user else "system",
        action=action,
        object_type=str(instance._meta.verbose_name).title(),
        object_id=str(instance.pk or ""),
        object_repr=str(instance)[:300],
        **fields,
    )


def _shown(instance: models.Model, field: str, value: str) -> str:
    if field in set(getattr(instance, "audit_secret_fields", ())):
        return "changed" if value else ""
    return value


def _defaults(instance: models.Model) -> dict[str, str]:
    fresh = type(instance)()
    fresh.pk = None
    return snapshot(fresh)


def record_create(user: Any, instance: models.Model) -> None:
    """One "created" entry, then one per field whose value differs from the default."""
    rows = [_entry(user, AuditEntry.Action.CREATE, instance)]
    defaults = _defaults(instance)
    for field, value in snapshot(instance).items():
        if value and value != defaults.get(field, ""):
            rows.append(
                _entry(
                    user,
                    AuditEntry.Action.CREATE,
                    instance,
                    field=field,
                    new_value=_shown(instance, field, value),
                )
            )
    AuditEntry.objects.bulk_create(rows)


def record_update(user: Any, before: dict[str, str], instance: models.Model) -> int:
    """Write one entry per field that differs from ``before``; returns how many."""
    after = snapshot(instance)
    secret = set(getattr(instance, "audit_secret_fields", ()))
    rows = [
        _entry(
            user,
            AuditEntry.Action.UPDATE,
            instance,
            field=field,
            old_value="" if field in secret else before.get(field, ""),
            new_value="changed" if field in secret else value,
        )
        for field, value in after.items()
        if before.get(field, "") != value
    ]
    AuditEntry.objects.bulk_create(rows)
    return len(rows)


def record_delete(user: Any, instance: models.Model) -> None:
    _entry(user, AuditEntry.Action.DELETE, instance).save()


def record_action(
    user: Any, instance: models.Model, field: str, old_value: str, new_value: str
) -> None:
    _entry(
        user,
        AuditEntry.Action.ACTION,
        instance,
        field=field,
        old_value=old_value,
        new_value=new_value,
    ).save()


class DeleteRefused(Exception):
    """Why an object may not be deleted, in words for an administrator."""


def delete_problem(instance: models.Model) -> str:
    """A model's own reason not to be deleted, beyond protected rows ('' = none): a model
    says it with a ``delete_problem()`` method (a connector's only bridgehead, say)."""
    method = getattr(instance, "delete_problem", None)
    return str(method()) if callable(method) else ""


def delete(user: Any, instance: models.Model) -> None:
    """Delete with its audit entry in one transaction; the console and the API both come
    here. Raises DeleteRefused when the model's rule or a protected row forbids it."""
    problem = delete_problem(instance)
    if problem:
        raise DeleteRefused(problem)
    try:
        with transaction.atomic():
            record_delete(user, instance)
            instance.delete()
    except ProtectedError as exc:
        # Also when something came to depend on it after the checks: nothing was deleted.
        names = ", ".join(sorted({str(o) for o in exc.protected_objects})[:10])
        raise DeleteRefused(f"'{instance}' is in use by: {names}.") from None
