"""SMTP AUTH credentials (password hashed) and TLS certificates (key write-only, parsed facts)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from django.contrib.auth.hashers import identify_hasher
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from servers.models import Certificate, SmtpCredential
from smtpadmin.audit import snapshot

pytestmark = pytest.mark.django_db

PASSWORD = "relay-secret-1234"


def errors_of(instance: Any) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        instance.full_clean()
    return caught.value.message_dict


# --- SMTP credentials -------------------------------------------------------------------------


@pytest.fixture
def credential() -> SmtpCredential:
    credential = SmtpCredential(username="scanner")
    credential.set_password(PASSWORD)
    return credential


def test_a_credential_checks_its_password(credential: SmtpCredential) -> None:
    assert credential.check_password(PASSWORD) is True
    assert credential.check_password(PASSWORD.upper()) is False
    assert credential.check_password("") is False


def test_a_credential_stores_a_hash_and_never_the_password(credential: SmtpCredential) -> None:
    credential.full_clean()
    credential.save()
    stored = SmtpCredential.objects.get(username="scanner")
    assert stored.password_hash
    assert PASSWORD not in stored.password_hash
    assert identify_hasher(stored.password_hash)  # a Django hash, whichever hasher is set
    assert stored.check_password(PASSWORD) is True


def test_the_same_password_hashes_differently_each_time() -> None:
    one, two = SmtpCredential(username="one"), SmtpCredential(username="two")
    one.set_password(PASSWORD)
    two.set_password(PASSWORD)
    assert one.password_hash != two.password_hash


def test_it_refuses_an_empty_password() -> None:
    with pytest.raises(ValidationError) as caught:
        SmtpCredential(username="scanner").set_password("")
    assert "password" in caught.value.message_dict


def test_a_credential_without_a_password_never_authenticates() -> None:
    credential = SmtpCredential(username="scanner")
    assert credential.check_password("") is False
    assert credential.check_password(PASSWORD) is False


def test_a_credential_without_a_password_is_refused() -> None:
    assert "password" in errors_of(SmtpCredential(username="scanner"))


def test_the_user_name_is_trimmed(credential: SmtpCredential) -> None:
    credential.username = "  scanner  "
    credential.full_clean()
    assert credential.username == "scanner"


@pytest.mark.parametrize(
    "username",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("copy machine", id="space"),
        pytest.param("copy\tmachine", id="tab"),
        pytest.param("copy\x01machine", id="control-character"),
        pytest.param("copy\u00a0machine", id="no-break-space"),
    ],
)
def test_it_refuses_a_user_name_with_blanks_or_control_characters(
    credential: SmtpCredential, username: str
) -> None:
    credential.username = username
    assert "username" in errors_of(credential)


@pytest.mark.parametrize("username", ["scanner@example.com", "DOMAIN\\scanner", "Jörg"])
def test_it_accepts_a_user_name_with_at_signs_backslashes_and_accents(
    credential: SmtpCredential, username: str
) -> None:
    credential.username = username
    credential.full_clean()


def test_it_refuses_a_duplicate_user_name(credential: SmtpCredential) -> None:
    credential.save()
    other = SmtpCredential(username=" scanner ")
    other.set_password("another-password-5678")
    assert "username" in errors_of(other)
    with pytest.raises(IntegrityError), transaction.atomic():
        SmtpCredential.objects.create(username="scanner", password_hash="x")


@pytest.mark.parametrize(("limit", "valid"), [(None, True), (1, True), (500, True), (0, False)])
def test_the_send_limit_is_blank_or_positive(
    credential: SmtpCredential, limit: int | None, valid: bool
) -> None:
    credential.send_limit_per_hour = limit
    if valid:
        credential.full_clean()
    else:
        assert "send_limit_per_hour" in errors_of(credential)


def test_the_audit_log_never_sees_a_password_hash(credential: SmtpCredential) -> None:
    credential.save()
    assert credential.password_hash not in snapshot(credential).values()


# --- certificates: building blocks ------------------------------------------------------------


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: Any, form: Any = serialization.PrivateFormat.PKCS8) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, form, serialization.NoEncryption()
    ).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _sign(subject: str, key: Any, issuer: str, issuer_key: Any, days: int = 30) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(issuer_key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# --- certificates -----------------------------------------------------------------------------


def test_a_self_signed_certificate_is_generated_with_its_facts_parsed() -> None:
    before = datetime.datetime.now(datetime.UTC)
    certificate = Certificate.generate_self_signed(
        "Mail", "Mail.Example.com", ["smtp.example.com", "Bücher.de", "mail.example.com"]
    )
    assert certificate.pk is None
    assert certificate.subject == "CN=mail.example.com"
    assert certificate.issuer == "CN=mail.example.com"
    assert certificate.sans == ["mail.example.com", "smtp.example.com", "xn--bcher-kva.de"]
    assert certificate.not_before is not None and certificate.not_before <= before
    expected_expiry = before + datetime.timedelta(days=825)
    assert certificate.not_after is not None
    assert abs(certificate.not_after - expected_expiry) < datetime.timedelta(minutes=1)
    assert certificate.is_expired is False
    parsed = x509.load_pem_x509_certificate(certificate.certificate_pem.encode())
    digest = parsed.fingerprint(hashes.SHA256()).hex().upper()
    assert certificate.fingerprint_sha256.replace(":", "") == digest
    assert len(certificate.fingerprint_sha256) == 95
    assert "PRIVATE KEY" in certificate.private_key_pem
    certificate.full_clean()
    certificate.save()


def test_a_self_signed_certificate_lasts_the_days_asked_for() -> None:
    certificate = Certificate.generate_self_signed("Short", "mail.example.com", days=30)
    assert certificate.not_after is not None and certificate.not_before is not None
    assert certificate.not_after - certificate.not_before == datetime.timedelta(days=30, minutes=5)


@pytest.mark.parametrize("common_name", ["192.0.2.1", "*.example.com", "mail example.com", ""])
def test_a_self_signed_certificate_needs_a_host_name(common_name: str) -> None:
    with pytest.raises(ValidationError):
        Certificate.generate_self_signed("Bad", common_name)


def test_a_self_signed_certificate_refuses_a_bad_alternative_name() -> None:
    with pytest.raises(ValidationError):
        Certificate.generate_self_signed("Bad", "mail.example.com", ["not a name"])


@pytest.mark.parametrize(
    "pem",
    [
        pytest.param("", id="empty"),
        pytest.param("hello", id="text"),
        pytest.param(
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
            id="broken-base64-body",
        ),
    ],
)
def test_garbage_certificate_pem_is_a_field_error(pem: str) -> None:
    generated = Certificate.generate_self_signed("Mail", "mail.example.com")
    generated.certificate_pem = pem
    assert "certificate_pem" in errors_of(generated)


def test_a_private_key_in_the_certificate_field_is_a_field_error() -> None:
    generated = Certificate.generate_self_signed("Mail", "mail.example.com")
    generated.certificate_pem = generated.private_key_pem
    assert "certificate_pem" in errors_of(generated)


@pytest.mark.parametrize(
    "pem",
    [
        pytest.param("", id="empty"),
        pytest.param("secret", id="text"),
        pytest.param(
            "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
            id="broken-body",
        ),
    ],
)
def test_garbage_private_key_pem_is_a_field_error(pem: str) -> None:
    generated = Certificate.generate_self_signed("Mail", "mail.example.com")
    generated.private_key_pem = pem
    assert "private_key_pem" in errors_of(generated)


def test_the_certificate_itself_is_not_a_private_key() -> None:
    generated = Certificate.generate_self_signed("Mail", "mail.example.com")
    generated.private_key_pem = generated.certificate_pem
    assert "private_key_pem" in errors_of(generated)


def test_an_encrypted_private_key_is_refused() -> None:
    generated = Certificate.generate_self_signed("Mail", "mail.example.com")
    key = serialization.load_pem_private_key(generated.private_key_pem.encode(), password=None)
    generated.private_key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    ).decode()
    assert "private_key_pem" in errors_of(generated)


def test_the_key_of_another_certificate_is_refused() -> None:
    mine = Certificate.generate_self_signed("Mine", "mail.example.com")
    theirs = Certificate.generate_self_signed("Theirs", "mail.example.com")
    mine.private_key_pem = theirs.private_key_pem
    errors = errors_of(mine)
    assert "does not belong" in errors["private_key_pem"][0]


def test_a_chain_of_two_certificates_is_accepted_and_the_first_one_described() -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    ca = _sign("Example CA", ca_key, "Example CA", ca_key, days=3650)
    leaf = _sign("mail.example.com", leaf_key, "Example CA", ca_key, days=90)
    certificate = Certificate(
        name="Chain", certificate_pem=_pem(leaf) + _pem(ca), private_key_pem=_key_pem(leaf_key)
    )
    certificate.full_clean()
    assert certificate.subject == "CN=mail.example.com"
    assert certificate.issuer == "CN=Example CA"
    assert certificate.sans == []
    assert certificate.not_after == leaf.not_valid_after_utc
    certificate.save()


def test_a_chain_in_the_wrong_order_is_refused() -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    ca = _sign("Example CA", ca_key, "Example CA", ca_key)
    leaf = _sign("mail.example.com", leaf_key, "Example CA", ca_key)
    certificate = Certificate(
        name="Chain", certificate_pem=_pem(ca) + _pem(leaf), private_key_pem=_key_pem(leaf_key)
    )
    assert "private_key_pem" in errors_of(certificate)


@pytest.mark.parametrize(
    "key_format",
    [
        pytest.param(serialization.PrivateFormat.PKCS8, id="pkcs8"),
        pytest.param(serialization.PrivateFormat.TraditionalOpenSSL, id="pkcs1"),
    ],
)
def test_an_rsa_certificate_and_key_are_accepted(
    rsa_key: rsa.RSAPrivateKey, key_format: Any
) -> None:
    leaf = _sign("rsa.example.com", rsa_key, "rsa.example.com", rsa_key)
    certificate = Certificate(
        name="RSA", certificate_pem=_pem(leaf), private_key_pem=_key_pem(rsa_key, key_format)
    )
    certificate.full_clean()
    assert certificate.subject == "CN=rsa.example.com"


def test_an_expired_certificate_says_so(rsa_key: rsa.RSAPrivateKey) -> None:
    now = datetime.datetime.now(datetime.UTC)
    old = (
        x509.CertificateBuilder()
        .subject_name(_name("old.example.com"))
        .issuer_name(_name("old.example.com"))
        .public_key(rsa_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=400))
        .not_valid_after(now - datetime.timedelta(days=1))
        .sign(rsa_key, hashes.SHA256())
    )
    certificate = Certificate(
        name="Old", certificate_pem=_pem(old), private_key_pem=_key_pem(rsa_key)
    )
    certificate.full_clean()
    assert certificate.is_expired is True


def test_the_audit_log_never_sees_the_private_key() -> None:
    certificate = Certificate.generate_self_signed("Mail", "mail.example.com")
    certificate.save()
    values = snapshot(certificate)
    assert all("PRIVATE KEY" not in value for value in values.values())
    assert values["private_key_pem"]  # a change is still visible, as a digest
