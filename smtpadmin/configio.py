"""Configuration export and import: the whole organization's configuration as one JSON file,
and a plan (created / changed old -> new / deleted) that an import shows before it applies it
in one transaction with one audit entry per change.

The sections come from the apps (``smtpadmin.registry.config_sections``); this module walks
each model's fields, so a configuration field added to a model is exported and imported
without a change here. Not exported: a model's ``runtime_fields``, automatic timestamps, the
fields its section skips, and its ``audit_secret_fields`` unless secrets are asked for (then
each is encrypted with Fernet under a key derived from a passphrase with scrypt).

References are natural keys, never database ids: a server by its name, a virtual server by
[server, name], a list of them sorted. Everything is in a stable order (sections in
dependency order, rows by key, keys sorted, indent 2) so that two exports diff cleanly.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import enum
import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import ProtectedError

from smtpadmin import audit
from smtpadmin.registry import ConfigChild, ConfigSection, config_sections

FORMAT = "smtpadmin-configuration"
VERSION = 1
PASSPHRASE_ENV = "SMTPADMIN_EXPORT_PASSPHRASE"
# scrypt's cost: about 0.1 s and 32 MiB per derivation; stored in the file with the salt.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_CHECK_TEXT = FORMAT.encode()
_MAX_SCRYPT_N = 2**20


class ConfigError(Exception):
    """The file cannot be imported: every reason, each naming section, object and field."""

    def __init__(self, messages: Iterable[str]) -> None:
        self.messages = list(messages)
        super().__init__("\n".join(self.messages))


# --- the fields of a section --------------------------------------------------------------


def _automatic(f: Any) -> bool:
    return bool(getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False))


def secret_field_names(model: Any) -> list[str]:
    return sorted(getattr(model, "audit_secret_fields", ()))


def config_fields(section: ConfigSection) -> list[Any]:
    """The fields a section exports besides its secrets: concrete and many-to-many fields
    minus runtime fields, secrets, automatic timestamps and the section's ``skip``."""
    model = section.model
    left_out = {
        *getattr(model, "runtime_fields", ()),
        *secret_field_names(model),
        *section.skip,
    }
    fields = [*model._meta.concrete_fields, *model._meta.many_to_many]
    return sorted(
        (f for f in fields if not f.primary_key and f.name not in left_out and not _automatic(f)),
        key=lambda f: f.name,
    )


def child_fields(child: ConfigChild) -> list[Any]:
    return sorted(
        (
            f
            for f in child.model._meta.concrete_fields
            if not f.primary_key and f.name != child.parent_field and not _automatic(f)
        ),
        key=lambda f: f.name,
    )


def _section_of(model: Any) -> ConfigSection:
    for section in config_sections.sections:
        if section.model is model:
            return section
    raise LookupError(f"{model._meta.label} is referenced but has no configuration section")


def check_references() -> list[str]:
    """Problems in the registered sections: a foreign key to a model no section exports, a
    key field that does not exist. Empty when the description is complete."""
    problems = []
    for section in config_sections.sections:
        for name in section.key:
            try:
                section.model._meta.get_field(name)
            except Exception:
                problems.append(f"{section.name}: key field '{name}' does not exist")
        for f in config_fields(section):
            if f.is_relation:
                try:
                    _section_of(f.related_model)
                except LookupError as exc:
                    problems.append(f"{section.name}.{f.name}: {exc}")
    return problems


# --- values -------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    return value


def _key_of(section: ConfigSection, instance: Any) -> tuple[Any, ...]:
    parts: list[Any] = []
    for name in section.key:
        f = section.model._meta.get_field(name)
        if f.is_relation:
            related = getattr(instance, name)
            parts.append(reference(_section_of(f.related_model), related))
        else:
            parts.append(_plain(getattr(instance, f.attname)))
    return tuple(parts)


def reference(section: ConfigSection, instance: Any) -> Any:
    """How a file refers to ``instance``: its key, a single value when the key has one part."""
    if instance is None:
        return None
    key = _key_of(section, instance)
    return key[0] if len(key) == 1 else list(key)


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _sort_key(value: Any) -> tuple[Any, ...]:
    """Orders keys whose parts are numbers, text or lists of them, numbers numerically."""
    if isinstance(value, list | tuple):
        return tuple(_sort_key(v) for v in value)
    if isinstance(value, bool) or value is None:
        return (0, str(value))
    if isinstance(value, int | float):
        return (1, value, "")
    return (2, 0, str(value))


def key_label(key: tuple[Any, ...]) -> str:
    def flat(value: Any) -> Iterator[str]:
        if isinstance(value, list | tuple):
            for v in value:
                yield from flat(v)
        else:
            yield str(value)

    return ", ".join(flat(key))


def _row(section: ConfigSection, instance: Any) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for f in config_fields(section):
        if f.many_to_many:
            target = _section_of(f.related_model)
            refs = [reference(target, r) for r in getattr(instance, f.name).all()]
            row[f.name] = sorted(refs, key=_sort_key)
        elif f.is_relation:
            row[f.name] = reference(_section_of(f.related_model), getattr(instance, f.name))
        else:
            row[f.name] = _plain(getattr(instance, f.attname))
    for child in section.children:
        fields = child_fields(child)
        rows = [
            {f.name: _plain(getattr(c, f.attname)) for f in fields}
            for c in getattr(instance, child.name).all()
        ]
        row[child.name] = sorted(rows, key=lambda r: _sort_key([r[k] for k in child.key]))
    return row


def _key_paths(section: ConfigSection, prefix: str) -> list[str]:
    """The relations a reference to ``section``'s objects follows (one level deeper)."""
    return [
        f"{prefix}__{name}"
        for name in section.key
        if section.model._meta.get_field(name).is_relation
    ]


def _instances(section: ConfigSection) -> list[Any]:
    if not section.key:
        return [section.model.objects.get_or_create(pk=1)[0]]
    joined: list[str] = []
    prefetched = [c.name for c in section.children]
    for f in config_fields(section):
        if not f.is_relation:
            continue
        paths = [f.name, *_key_paths(_section_of(f.related_model), f.name)]
        (prefetched if f.many_to_many else joined).extend(paths)
    query = section.model.objects.select_related(*joined).prefetch_related(*prefetched)
    return list(query)


def current(section: ConfigSection) -> dict[Any, tuple[Any, dict[str, Any], dict[str, str]]]:
    """The database's rows of a section: frozen key -> (instance, row, raw secrets)."""
    rows = {}
    for instance in _instances(section):
        secrets = {n: getattr(instance, n) or "" for n in secret_field_names(section.model)}
        rows[_freeze(_key_of(section, instance))] = (instance, _row(section, instance), secrets)
    return rows


# --- secrets ------------------------------------------------------------------------------


def _fernet(passphrase: str, salt: bytes, n: int, r: int, p: int) -> Fernet:
    key = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def _new_encryption(passphrase: str) -> tuple[Fernet, dict[str, Any]]:
    if not passphrase:
        raise ConfigError(["Secrets need a passphrase to encrypt them with."])
    salt = os.urandom(16)
    fernet = _fernet(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    header = {
        "check": fernet.encrypt(_CHECK_TEXT).decode(),
        "cipher": "fernet",
        "kdf": "scrypt",
        "n": SCRYPT_N,
        "p": SCRYPT_P,
        "r": SCRYPT_R,
        "salt": base64.b64encode(salt).decode(),
    }
    return fernet, header


def _opened(header: Any, passphrase: str | None) -> Fernet:
    if passphrase is None or passphrase == "":
        raise ConfigError(
            [
                "The file holds encrypted secrets: give the passphrase it was exported with "
                f"(--passphrase-file, or {PASSPHRASE_ENV})."
            ]
        )
    try:
        if header.get("cipher") != "fernet" or header.get("kdf") != "scrypt":
            raise ValueError
        n, r, p = int(header["n"]), int(header["r"]), int(header["p"])
        if not (2 <= n <= _MAX_SCRYPT_N and 1 <= r <= 32 and 1 <= p <= 16):
            raise ValueError
        salt = base64.b64decode(header["salt"], validate=True)
        fernet = _fernet(passphrase, salt, n, r, p)
        check = str(header["check"]).encode()
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise ConfigError(["encryption: the file's encryption header is not understood."]) from None
    try:
        if fernet.decrypt(check) != _CHECK_TEXT:
            raise InvalidToken
    except InvalidToken:
        raise ConfigError(["Wrong passphrase: the file's secrets cannot be decrypted."]) from None
    return fernet


# --- export -------------------------------------------------------------------------------


def export_document(secrets: bool = False, passphrase: str | None = None) -> dict[str, Any]:
    fernet, header = _new_encryption(passphrase or "") if secrets else (None, None)
    sections: dict[str, Any] = {}
    for section in config_sections.sections:
        rows = []
        for _key, (_instance, row, raw) in current(section).items():
            if fernet is not None:
                for name, value in raw.items():
                    row[name] = {"encrypted": fernet.encrypt(value.encode()).decode()}
            rows.append(dict(sorted(row.items())))
        if not section.key:
            sections[section.name] = rows[0]
        else:
            sections[section.name] = sorted(
                rows, key=lambda r: _sort_key([r[k] for k in section.key])
            )
    return {"encryption": header, "format": FORMAT, "sections": sections, "version": VERSION}


def export_text(secrets: bool = False, passphrase: str | None = None) -> str:
    """The configuration file: the document as JSON, indent 2, newline at the end."""
    return json.dumps(export_document(secrets, passphrase), indent=2, ensure_ascii=False) + "\n"


# --- reading a file -----------------------------------------------------------------------


@dataclass
class ConfigFile:
    """A file read and checked for shape: per section present, frozen key -> row (secrets
    decrypted); sections absent from the file are left alone by an import."""

    rows: dict[str, dict[Any, dict[str, Any]]] = field(default_factory=dict)
    digest: str = ""
    encrypted: bool = False


def _file_value(f: Any, value: Any, where: str, errors: list[str]) -> Any:
    if f.many_to_many:
        target = _section_of(f.related_model)
        if not isinstance(value, list) or not all(_is_ref(target, v) for v in value):
            errors.append(f"{where}: a list of {target.name} keys is expected.")
            return value
        return sorted(value, key=_sort_key)
    if f.is_relation:
        target = _section_of(f.related_model)
        if value is not None and not _is_ref(target, value):
            errors.append(f"{where}: a {target.name} key is expected.")
        return value
    if isinstance(f, models.JSONField):
        return value
    if isinstance(value, dict | list):
        errors.append(f"{where}: a single value is expected.")
        return value
    try:
        return _plain(f.to_python(value))
    except ValidationError as exc:
        errors.extend(f"{where}: {m}" for m in exc.messages)
        return value


def _is_ref(target: ConfigSection, value: Any) -> bool:
    if len(target.key) == 1:
        return isinstance(value, str | int) and not isinstance(value, bool)
    return isinstance(value, list) and len(value) == len(target.key)


def _read_row(
    section: ConfigSection,
    raw: Any,
    position: int,
    fernet_for: Any,
    errors: list[str],
) -> tuple[Any, dict[str, Any]] | None:
    name = section.name
    if not isinstance(raw, dict):
        errors.append(f"{name}[#{position + 1}]: an object is expected.")
        return None
    missing = [k for k in section.key if k not in raw]
    if missing:
        errors.append(f"{name}[#{position + 1}]: the key field '{missing[0]}' is missing.")
        return None
    fields = {f.name: f for f in config_fields(section)}
    secrets = set(secret_field_names(section.model))
    children = {c.name: c for c in section.children}
    row: dict[str, Any] = {}
    key_values = [raw[k] for k in section.key]
    label = f"{name}[{key_label(tuple(key_values))}]" if section.key else name
    for field_name, value in sorted(raw.items()):
        where = f"{label}.{field_name}"
        if field_name in fields:
            row[field_name] = _file_value(fields[field_name], value, where, errors)
        elif field_name in secrets:
            if not (isinstance(value, dict) and isinstance(value.get("encrypted"), str)):
                errors.append(f"{where}: secrets are read only encrypted, as --secrets writes.")
                continue
            fernet = fernet_for()
            if fernet is None:
                continue
            try:
                row[field_name] = fernet.decrypt(value["encrypted"].encode()).decode()
            except (InvalidToken, UnicodeDecodeError):
                errors.append(f"{where}: cannot be decrypted with this passphrase.")
        elif field_name in children:
            row[field_name] = _read_children(children[field_name], value, where, errors)
        else:
            errors.append(f"{where}: unknown field.")
    key = _freeze(tuple(row.get(k, raw[k]) for k in section.key))
    try:
        hash(key)
    except TypeError:
        errors.append(f"{name}[#{position + 1}]: a key is made of text and numbers.")
        return None
    return key, row


def _read_children(child: ConfigChild, value: Any, where: str, errors: list[str]) -> Any:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        errors.append(f"{where}: a list of objects is expected.")
        return []
    fields = {f.name: f for f in child_fields(child)}
    rows = []
    for position, raw in enumerate(value):
        row = {}
        for name, item in sorted(raw.items()):
            if name not in fields:
                errors.append(f"{where}[#{position + 1}].{name}: unknown field.")
                continue
            row[name] = _file_value(fields[name], item, f"{where}[#{position + 1}].{name}", errors)
        rows.append(row)
    return rows


def read(text: str | bytes, passphrase: str | None = None) -> ConfigFile:
    """Parse and check a configuration file's shape (not yet its rules: ``plan`` and
    ``apply`` do that against the database). Raises ConfigError."""
    raw_bytes = text.encode() if isinstance(text, str) else text
    digest = hashlib.sha256(raw_bytes).hexdigest()
    try:
        document = json.loads(raw_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError([f"This is not a JSON file: {exc}."]) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ConfigError([f"This is not a configuration file (its format must be '{FORMAT}')."])
    if document.get("version") != VERSION:
        raise ConfigError(
            [
                f"Configuration file version {document.get('version')!r} is not supported "
                f"(this installation reads version {VERSION})."
            ]
        )
    sections = document.get("sections")
    if not isinstance(sections, dict):
        raise ConfigError(["sections: an object with one entry per section is expected."])
    known = {s.name: s for s in config_sections.sections}
    errors = [f"{name}: unknown section." for name in sorted(set(sections) - set(known))]
    header = document.get("encryption")
    opened: list[Fernet | None] = []

    def fernet_for() -> Fernet | None:
        if not opened:
            if not header:
                errors.append("encryption: the file has encrypted values but no header.")
                opened.append(None)
            else:
                opened.append(_opened(header, passphrase))
        return opened[0]

    result = ConfigFile(digest=digest, encrypted=bool(header))
    for section in config_sections.sections:
        if section.name not in sections:
            continue
        value = sections[section.name]
        if not section.key:
            value = [value]
        if not isinstance(value, list):
            errors.append(f"{section.name}: a list of objects is expected.")
            continue
        rows: dict[Any, dict[str, Any]] = {}
        for position, raw in enumerate(value):
            read_row = _read_row(section, raw, position, fernet_for, errors)
            if read_row is None:
                continue
            key, row = read_row
            if key in rows:
                errors.append(f"{section.name}[{key_label(key)}]: listed twice.")
            rows[key] = row
        result.rows[section.name] = rows
    if errors:
        raise ConfigError(errors)
    return result


# --- the plan -----------------------------------------------------------------------------


class Change(enum.StrEnum):
    CREATE = "create"
    UPDATE = "change"
    DELETE = "delete"


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: str
    new: str
    secret: bool = False

    def __str__(self) -> str:
        if self.secret:  # "set" on a new object, else "changed": never the value
            return f"{self.field}: {self.new}"
        if not self.old:  # a new object's value
            return f"{self.field}: {self.new}"
        return f"{self.field}: {self.old} -> {self.new}"


@dataclass(frozen=True)
class ObjectPlan:
    section: str
    key: Any  # frozen natural key
    change: Change
    fields: tuple[FieldChange, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.section}[{key_label(self.key)}]" if self.key else self.section


@dataclass(frozen=True)
class SectionPlan:
    name: str
    objects: tuple[ObjectPlan, ...]

    def of(self, change: Change) -> list[ObjectPlan]:
        return [o for o in self.objects if o.change == change]


@dataclass(frozen=True)
class Plan:
    sections: tuple[SectionPlan, ...]

    @property
    def objects(self) -> list[ObjectPlan]:
        return [o for s in self.sections for o in s.objects]

    @property
    def is_empty(self) -> bool:
        return not self.objects

    def count(self, change: Change) -> int:
        return sum(1 for o in self.objects if o.change == change)

    def summary(self) -> str:
        return (
            f"{self.count(Change.CREATE)} to create, {self.count(Change.UPDATE)} to change, "
            f"{self.count(Change.DELETE)} to delete"
        )

    def text(self) -> str:
        """The plan as the dry run prints it: stable, one object a line, its fields below."""
        lines: list[str] = []
        marks = {Change.CREATE: "+", Change.UPDATE: "~", Change.DELETE: "-"}
        for section in self.sections:
            if not section.objects:
                continue
            lines.append(f"{section.name}:")
            for change in (Change.CREATE, Change.UPDATE, Change.DELETE):
                for obj in section.of(change):
                    shown = key_label(obj.key) if obj.key else section.name
                    lines.append(f"  {marks[change]} {change.value} {shown}")
                    lines.extend(f"      {fc}" for fc in obj.fields)
        lines.append(f"Plan: {self.summary()}.")
        return "\n".join(lines) + "\n"


def shown(value: Any) -> str:
    """A value as a plan shows it: JSON, so that text, numbers, lists and null stay apart."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _defaults(section: ConfigSection) -> dict[str, Any]:
    fresh = section.model()
    values: dict[str, Any] = {}
    for f in config_fields(section):
        if f.many_to_many:
            values[f.name] = []
        elif f.is_relation:
            values[f.name] = None
        else:
            values[f.name] = _plain(getattr(fresh, f.attname))
    values.update({child.name: [] for child in section.children})
    return values


def _child_rows(rows: list[dict[str, Any]], child: ConfigChild) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: _sort_key([r.get(k) for k in child.key]))


def plan(config: ConfigFile) -> Plan:
    """What importing ``config`` would create, change and delete (read only)."""
    sections = []
    for section in config_sections.sections:
        if section.name not in config.rows:
            continue
        wanted = config.rows[section.name]
        existing = current(section)
        secrets = set(secret_field_names(section.model))
        objects: list[ObjectPlan] = []
        defaults = _defaults(section)
        for key in sorted(wanted, key=_sort_key):
            row = wanted[key]
            if key not in existing:
                changes = [
                    FieldChange(name, "", shown(value))
                    for name, value in row.items()
                    if name not in secrets
                    and (name in section.key or value != defaults.get(name, object()))
                ]
                # A secret the file lacks stays empty on a new object: say so before Apply.
                changes += [
                    FieldChange(
                        name, "", "set" if row.get(name) else "not in the file", secret=True
                    )
                    for name in sorted(secrets)
                    if row.get(name) or name not in row
                ]
                objects.append(
                    ObjectPlan(section.name, key, Change.CREATE, tuple(sorted(changes, key=_by)))
                )
                continue
            _instance, old_row, old_secrets = existing[key]
            changes = []
            for name, value in row.items():
                if name in secrets:
                    if value != old_secrets.get(name, ""):
                        changes.append(FieldChange(name, "", "changed", secret=True))
                    continue
                old = old_row.get(name)
                child = next((c for c in section.children if c.name == name), None)
                if child is not None:
                    value, old = _child_rows(value, child), _child_rows(old or [], child)
                if value != old:
                    changes.append(FieldChange(name, shown(old), shown(value)))
            if changes:
                objects.append(
                    ObjectPlan(section.name, key, Change.UPDATE, tuple(sorted(changes, key=_by)))
                )
        if section.key:
            for key in sorted(set(existing) - set(wanted), key=_sort_key):
                objects.append(ObjectPlan(section.name, key, Change.DELETE))
        sections.append(SectionPlan(section.name, tuple(objects)))
    return Plan(tuple(sections))


def _by(change: FieldChange) -> str:
    return change.field


# --- applying it --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult:
    plan: Plan
    applied: bool
    audit_entries: int


def _parts(section: ConfigSection, value: Any) -> tuple[Any, ...]:
    """A reference (single value or list) as the key's parts."""
    if len(section.key) == 1:
        return (value,)
    return tuple(value) if isinstance(value, list | tuple) else (value,)


def _lookup(section: ConfigSection, parts: tuple[Any, ...], prefix: str = "") -> dict[str, Any]:
    filters: dict[str, Any] = {}
    for name, part in zip(section.key, parts, strict=True):
        f = section.model._meta.get_field(name)
        if f.is_relation:
            target = _section_of(f.related_model)
            filters.update(_lookup(target, _parts(target, part), f"{prefix}{name}__"))
        else:
            filters[f"{prefix}{name}"] = part
    return filters


def _find(section: ConfigSection, key: tuple[Any, ...]) -> Any:
    """The database's object with this natural key (its parts), or None."""
    if not section.key:
        return section.model.objects.get_or_create(pk=1)[0]
    try:
        return section.model.objects.filter(**_lookup(section, key)).order_by("pk").first()
    except (ValueError, TypeError, ValidationError):
        return None


def _messages(label: str, exc: ValidationError) -> list[str]:
    if not hasattr(exc, "error_dict"):
        return [f"{label}: {m}" for m in exc.messages]
    out: list[str] = []
    for name, messages in sorted(exc.message_dict.items()):
        where = label if name == NON_FIELD_ERRORS else f"{label}.{name}"
        out.extend(f"{where}: {m}" for m in messages)
    return out


class _Importer:
    def __init__(self, config: ConfigFile, user: Any) -> None:
        self.config = config
        self.user = user
        self.errors: list[str] = []
        self.audit_before = 0

    def resolve(self, f: Any, value: Any, where: str) -> Any:
        target = _section_of(f.related_model)
        try:
            found = _find(target, _parts(target, value))
        except ValueError:  # a key with the wrong number of parts
            found = None
        if found is None:
            self.errors.append(
                f"{where}: refers to {target.name}[{key_label(_freeze((value,)))}], "
                "which is neither in the file nor in the database."
            )
        return found

    def write(self, section: ConfigSection, obj: ObjectPlan) -> None:
        row = self.config.rows[section.name][obj.key]
        instance = _find(section, obj.key) if obj.change == Change.UPDATE else section.model()
        label = obj.label
        before = audit.snapshot(instance) if obj.change == Change.UPDATE else None
        errors_before = len(self.errors)
        fields = {f.name: f for f in config_fields(section)}
        many: dict[str, list[Any]] = {}
        for name, value in row.items():
            where = f"{label}.{name}"
            if name in fields and fields[name].many_to_many:
                found = [self.resolve(fields[name], v, where) for v in value]
                if not value and not fields[name].blank:
                    self.errors.append(f"{where}: at least one is required.")
                many[name] = [f for f in found if f is not None]
            elif name in fields and fields[name].is_relation:
                target = self.resolve(fields[name], value, where) if value is not None else None
                setattr(instance, name, target)
            elif name in fields:
                setattr(instance, fields[name].attname, fields[name].to_python(value))
            elif name in secret_field_names(section.model) and value != (
                getattr(instance, name) or ""
            ):
                setattr(instance, name, value)
                # A new password ends a lockout earned against the old one.
                instance._password_changed = True
        if obj.change == Change.CREATE:
            for name in secret_field_names(section.model):
                f = section.model._meta.get_field(name)
                if name not in row and not f.blank:
                    self.errors.append(
                        f"{label}.{name}: a new object needs its secret; export with --secrets."
                    )
            for name, f in fields.items():
                if f.many_to_many and name not in row and not f.blank:
                    self.errors.append(f"{label}.{name}: at least one is required.")
        children = self.children(section, row, label)
        if len(self.errors) > errors_before:
            return
        try:
            instance.full_clean()
        except ValidationError as exc:
            self.errors.extend(_messages(label, exc))
            return
        try:
            with transaction.atomic():
                if section.before_save is not None:
                    section.before_save(instance, self.user)
                instance.save()
                for name, targets in many.items():
                    getattr(instance, name).set(targets)
                for child, rows in children:
                    getattr(instance, child.name).all().delete()
                    for child_row in rows:
                        setattr(child_row, child.parent_field, instance)
                    child.model.objects.bulk_create(rows)
                if before is None:
                    audit.record_create(self.user, instance)
                else:
                    audit.record_update(self.user, before, instance)
        except IntegrityError as exc:
            self.errors.append(f"{label}: refused by the database: {str(exc).splitlines()[0]}")
        except ValidationError as exc:
            self.errors.extend(_messages(label, exc))

    def children(
        self, section: ConfigSection, row: dict[str, Any], label: str
    ) -> list[tuple[ConfigChild, list[Any]]]:
        out = []
        for child in section.children:
            if child.name not in row:
                continue
            where = f"{label}.{child.name}"
            items = []
            seen: set[Any] = set()
            for child_row in row[child.name]:
                item = child.model(
                    **{
                        name: child.model._meta.get_field(name).to_python(value)
                        for name, value in child_row.items()
                    }
                )
                key = key_label(tuple(child_row.get(k) for k in child.key))
                try:
                    item.full_clean(exclude=[child.parent_field], validate_unique=False)
                except ValidationError as exc:
                    self.errors.extend(_messages(f"{where}[{key}]", exc))
                    continue
                normal = tuple(getattr(item, k) for k in child.key)
                if normal in seen:
                    self.errors.append(f"{where}[{key}]: listed twice.")
                seen.add(normal)
                items.append(item)
            if len(row[child.name]) < child.min_count:
                self.errors.append(f"{where}: at least {child.min_count} required.")
            out.append((child, items))
        return out

    def delete(self, section: ConfigSection, obj: ObjectPlan) -> None:
        instance = _find(section, obj.key)
        if instance is None:
            return
        problem = audit.delete_problem(instance)
        if problem:
            self.errors.append(f"{obj.label}: cannot be deleted: {problem}")
            return
        try:
            with transaction.atomic():
                audit.record_delete(self.user, instance)
                instance.delete()
        except ProtectedError as exc:
            names = ", ".join(sorted({str(o) for o in exc.protected_objects})[:10])
            self.errors.append(f"{obj.label}: cannot be deleted, it is in use by: {names}.")
        except IntegrityError as exc:
            self.errors.append(f"{obj.label}: refused by the database: {str(exc).splitlines()[0]}")


def apply(config: ConfigFile, user: Any, commit: bool = True) -> ImportResult:
    """Make the database match the file, in one transaction: creations and changes in
    dependency order, then deletions in reverse order, each audited. Every object's rules
    (``full_clean()``) and references are checked; any error raises ConfigError and nothing
    is kept. With ``commit=False`` (a dry run) the same work is done and rolled back, so the
    errors found are the ones a real import would meet.

    Each step runs in its own savepoint; the steps that failed are tried again after the
    others as long as a round makes progress, since one may wait for another that comes later
    in that order (a renamed virtual server takes its old binding once the old one is gone).
    The errors reported are those of the last round."""
    from smtpadmin.models import AuditEntry

    the_plan = plan(config)
    importer = _Importer(config, user)
    by_name = {s.name: s for s in config_sections.sections}
    steps = [
        (by_name[sp.name], obj)
        for sp in the_plan.sections
        for obj in sp.objects
        if obj.change != Change.DELETE
    ] + [
        (by_name[sp.name], obj)
        for sp in reversed(the_plan.sections)
        for obj in reversed(sp.of(Change.DELETE))
    ]
    with transaction.atomic():
        first_entry = AuditEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0
        while steps:
            importer.errors = []
            failed = []
            for section, obj in steps:
                errors_before = len(importer.errors)
                if obj.change == Change.DELETE:
                    importer.delete(section, obj)
                else:
                    importer.write(section, obj)
                if len(importer.errors) > errors_before:
                    failed.append((section, obj))
            if len(failed) == len(steps):
                break
            steps = failed
        entries = AuditEntry.objects.filter(id__gt=first_entry).count()
        if importer.errors or not commit:
            transaction.set_rollback(True)
    if importer.errors:
        raise ConfigError(importer.errors)
    return ImportResult(plan=the_plan, applied=commit, audit_entries=entries if commit else 0)


def passphrase_from(path: str | None) -> str | None:
    """The passphrase from a file (its first line) or else the environment; never an argument
    on a command line, which other local users can read."""
    if path:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().rstrip("\r\n")
    return os.environ.get(PASSPHRASE_ENV) or None
