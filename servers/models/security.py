"""SMTP AUTH credentials (password hashed, write-only) and TLS certificates (key write-only)."""

from __future__ import annotations

import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.contrib.auth.hashers import check_password, make_password
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models, transaction
from django.utils import timezone

from smtpadmin.validators import normalize_domain


def hour_number(now: datetime.datetime | None = None) -> int:
    """The send limit's hourly bucket: whole hours since 1970-01-01 00:00 UTC."""
    moment = now if now is not None else timezone.now()
    return int(moment.timestamp()) // 3600


class SmtpCredential(models.Model):
    """A user name and password that SMTP clients present with AUTH PLAIN / LOGIN."""

    username = models.CharField(max_length=200, unique=True)
    password_hash = models.CharField(max_length=200)
    enabled = models.BooleanField(default=True)
    virtual_servers = models.ManyToManyField(
        "servers.VirtualServer",
        blank=True,
        related_name="credentials",
        help_text="Virtual servers that accept this credential; none selected = all.",
    )
    send_limit_per_hour = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="Blank = no limit"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    # The send limit's counter: messages started (MAIL FROM accepted) in the hour numbered
    # ``sent_hour`` (hours since 1970 UTC), shared by every relay process through this row.
    sent_hour = models.PositiveIntegerField(default=0)
    sent_in_hour = models.PositiveIntegerField(default=0)
    failed_logins = models.PositiveIntegerField(default=0)
    locked_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    audit_secret_fields = ("password_hash",)
    # Written by the relay while it runs; never by a configuration save, never audited.
    runtime_fields = ("last_used_at", "failed_logins", "locked_until", "sent_hour", "sent_in_hour")

    class Meta:
        ordering = ["username"]
        verbose_name = "SMTP credential"

    def __str__(self) -> str:
        return self.username

    def save(self, *args: Any, **kwargs: Any) -> None:
        super().save(*args, **kwargs)
        if getattr(self, "_password_changed", False):
            # A new password ends the lockout: the guesses were made against the old one.
            self._password_changed = False
            self._forget_failures()

    def set_password(self, raw_password: str) -> None:
        if not raw_password:
            raise ValidationError({"password": "Enter a password."})
        self.password_hash = make_password(raw_password)
        self._password_changed = True

    def _forget_failures(self) -> int:
        from smtpadmin import throttle

        locked = throttle.unlock(throttle.Scope.SMTP, self.username)
        SmtpCredential.objects.filter(pk=self.pk).update(failed_logins=0, locked_until=None)
        self.failed_logins, self.locked_until = 0, None
        return locked

    def login_locks(self) -> list[Any]:
        """The client addresses whose failed logins count against this name (LoginThrottle)."""
        from smtpadmin import throttle

        return throttle.locks(throttle.Scope.SMTP, self.username)

    def unlock(self, by: Any = None) -> int:
        """Lift every lock and forget the failed logins of this name; audited. Returns how
        many client addresses were locked."""
        from smtpadmin.audit import record_action

        with transaction.atomic():
            before = self.failed_logins
            locked = self._forget_failures()
            record_action(
                by, self, "login lock", f"{locked} locked, {before} failed logins", "unlocked"
            )
        return locked

    def sent_this_hour(self, now: datetime.datetime | None = None) -> int:
        """Messages counted against the send limit in the current hour (UTC)."""
        return self.sent_in_hour if self.sent_hour == hour_number(now) else 0

    def check_password(self, raw_password: str) -> bool:
        return bool(self.password_hash) and check_password(raw_password, self.password_hash)

    def clean(self) -> None:
        self.username = (self.username or "").strip()
        if not self.username or any(c.isspace() or ord(c) < 32 for c in self.username):
            raise ValidationError({"username": "A user name without spaces or control characters."})
        if not self.password_hash:
            raise ValidationError({"password": "Set a password."})


def _parse_certificates(pem: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except (ValueError, TypeError):
        raise ValidationError({"certificate_pem": "This is not a PEM certificate."}) from None
    if not certificates:
        raise ValidationError({"certificate_pem": "No certificate found in the PEM text."})
    return certificates


def _parse_private_key(pem: str) -> Any:
    try:
        return serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValidationError(
            {"private_key_pem": "This is not an unencrypted PEM private key."}
        ) from None


class Certificate(models.Model):
    """A TLS certificate chain and its private key. The key is never shown again."""

    name = models.CharField(max_length=200, unique=True)
    certificate_pem = models.TextField(help_text="The certificate first, then its chain (PEM).")
    private_key_pem = models.TextField()
    # Parsed from the certificate on save.
    subject = models.CharField(max_length=500, blank=True)
    issuer = models.CharField(max_length=500, blank=True)
    sans = models.JSONField(default=list, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    not_after = models.DateTimeField(null=True, blank=True)
    fingerprint_sha256 = models.CharField(max_length=95, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    audit_secret_fields = ("private_key_pem",)
    audit_skip_fields = ("created_at", "certificate_pem", "issuer", "sans", "not_before")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_expired(self) -> bool:
        return self.not_after is not None and self.not_after < timezone.now()

    def clean(self) -> None:
        certificates = _parse_certificates(self.certificate_pem or "")
        key = _parse_private_key(self.private_key_pem or "")
        leaf = certificates[0]
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        encoding = serialization.Encoding.DER
        if leaf.public_key().public_bytes(encoding, public) != key.public_key().public_bytes(
            encoding, public
        ):
            raise ValidationError(
                {"private_key_pem": "This private key does not belong to the certificate."}
            )
        self.subject = leaf.subject.rfc4514_string()[:500]
        self.issuer = leaf.issuer.rfc4514_string()[:500]
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            self.sans = [str(n.value) for n in san]
        except x509.ExtensionNotFound:
            self.sans = []
        self.not_before = leaf.not_valid_before_utc
        self.not_after = leaf.not_valid_after_utc
        digest = leaf.fingerprint(hashes.SHA256()).hex().upper()
        self.fingerprint_sha256 = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))

    @classmethod
    def generate_self_signed(
        cls, name: str, common_name: str, alt_names: list[str] | None = None, days: int = 825
    ) -> Certificate:
        """A new (unsaved, cleaned) self-signed certificate with an EC P-256 key."""
        common_name = normalize_domain(common_name)
        names = [common_name] + [normalize_domain(n) for n in alt_names or [] if n]
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in dict.fromkeys(names)]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        instance = cls(
            name=name,
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
            private_key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
        )
        instance.clean()
        return instance


__all__ = ["Certificate", "SmtpCredential", "hour_number"]
