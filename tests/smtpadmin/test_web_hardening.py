"""Web hardening: the Content-Security-Policy and the other security headers on console pages,
API responses and the login page; no inline script in any template; Secure cookies, HSTS and
the HTTPS redirect behind a TLS proxy (SMTPADMIN_SECURE_PROXY); ``check --deploy`` clean with
the production settings of docker-compose.yml."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.contrib.auth.models import User
from django.test import Client, override_settings
from rest_framework.test import APIClient

from tests.conftest import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIRS = [ROOT / "templates", *sorted(ROOT.glob("*/templates"))]


def csp_directives(response: Any) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    parts = (part.strip().split(None, 1) for part in header.split(";") if part.strip())
    return {part[0]: (part[1] if len(part) > 1 else "") for part in parts}


def assert_hardened(response: Any) -> None:
    policy = csp_directives(response)
    assert policy["script-src"] == "'self'", policy
    assert policy["style-src"] == "'self'", policy
    assert policy["default-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'"
    assert policy["base-uri"] == "'self'"
    assert policy["form-action"] == "'self'"
    assert policy["img-src"] == "'self' data:"
    assert "unsafe" not in response["Content-Security-Policy"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- headers ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_login_page_is_sent_with_a_strict_policy() -> None:
    assert_hardened(Client().get("/login/"))


@pytest.mark.django_db
def test_a_failed_login_and_the_redirect_to_login_carry_the_policy_too(
    full_admin: User,
) -> None:
    assert_hardened(Client().post("/login/", {"username": "fiona-full", "password": "wrong"}))
    assert_hardened(Client().get("/servers/"))


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["/", "/servers/", "/connectors/", "/relay/queues/", "/administration/users/"]
)
def test_console_pages_are_sent_with_a_strict_policy(full_admin: User, path: str) -> None:
    response = logged_in(full_admin).get(path)
    assert response.status_code == 200
    assert_hardened(response)


@pytest.mark.django_db
def test_refusals_and_missing_pages_carry_the_policy(outsider: User, full_admin: User) -> None:
    refused = logged_in(outsider).get("/servers/")
    assert refused.status_code == 403
    assert_hardened(refused)
    missing = logged_in(full_admin).get("/servers/999999/")
    assert missing.status_code == 404
    assert_hardened(missing)


@pytest.mark.django_db
def test_a_csrf_failure_and_a_slash_redirect_carry_the_policy() -> None:
    refused = Client(enforce_csrf_checks=True).post("/login/", {"username": "x"})
    assert refused.status_code == 403
    assert_hardened(refused)
    slash = Client().get("/login")
    assert slash.status_code == 301
    assert "Content-Security-Policy" in slash


@pytest.mark.django_db
def test_api_responses_are_sent_with_a_strict_policy(full_admin: User) -> None:
    client = APIClient()
    client.force_authenticate(full_admin)
    assert_hardened(client.get("/api/v1/servers/"))
    assert_hardened(APIClient().get("/api/v1/servers/"))  # 401


@pytest.mark.django_db
def test_the_browsable_api_may_use_inline_styles_but_never_inline_script(
    full_admin: User,
) -> None:
    browsable = logged_in(full_admin).get("/api/v1/servers/", HTTP_ACCEPT="text/html")
    assert browsable.status_code == 200
    assert browsable["Content-Type"].startswith("text/html")
    policy = csp_directives(browsable)
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self' 'unsafe-inline'"
    assert policy["frame-ancestors"] == "'none'"
    assert browsable["X-Content-Type-Options"] == "nosniff"
    assert browsable["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
def test_swagger_ui_loads_its_start_script_from_a_file(full_admin: User) -> None:
    client = logged_in(full_admin)
    page = client.get("/api/docs/")
    assert page.status_code == 200
    assert_hardened(page)
    html = page.content.decode()
    assert inline_script_problems(html) == []
    assert "<style" not in html
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.content.decode()
    assert_hardened(script)


# --- no inline script in templates -----------------------------------------------------------

SCRIPT_TAG = re.compile(r"<script\b([^>]*)>(.*?)</script\s*>", re.IGNORECASE | re.DOTALL)
EVENT_HANDLER = re.compile(r"""[\s"'/]on[a-z]+\s*=""", re.IGNORECASE)
JS_URL = re.compile(r"""(?:href|src|action|formaction)\s*=\s*["']?\s*javascript:""", re.IGNORECASE)
INLINE_STYLE = re.compile(r"""<style\b|[\s"']style\s*=""", re.IGNORECASE)


def inline_script_problems(text: str) -> list[str]:
    """What a strict CSP would refuse in ``text``: script bodies, event handler attributes,
    javascript: URLs and inline styles. A ``<script src=...>`` with an empty body is fine, and
    so is a data block (``type="application/json"``), which never runs."""
    problems = []
    for match in SCRIPT_TAG.finditer(text):
        attributes, body = match.group(1), match.group(2)
        data_block = re.search(r"""type\s*=\s*["']?application/(?:ld\+)?json""", attributes, re.I)
        if body.strip() and not data_block:
            problems.append(f"inline script: {match.group(0)[:80]!r}")
        if "src=" not in attributes.replace(" ", "") and not data_block:
            problems.append(f"script without src: {match.group(0)[:80]!r}")
    problems += [f"event handler: {m.group(0)!r}" for m in EVENT_HANDLER.finditer(text)]
    problems += [f"javascript: URL: {m.group(0)!r}" for m in JS_URL.finditer(text)]
    problems += [f"inline style: {m.group(0)!r}" for m in INLINE_STYLE.finditer(text)]
    return problems


def test_the_scanner_finds_each_kind_of_inline_code() -> None:
    assert inline_script_problems('<script src="/static/a.js"></script>') == []
    assert inline_script_problems('<script type="application/json">{"a": 1}</script>') == []
    assert inline_script_problems('<a class="button" data-onclick="x">Go</a>') == []
    assert len(inline_script_problems("<script>alert(1)</script>")) == 2
    assert inline_script_problems('<button onclick="go()">Go</button>')
    assert inline_script_problems("<body\nonload='x()'>")
    assert inline_script_problems('<a href="javascript:history.back()">Cancel</a>')
    assert inline_script_problems('<p style="color: red">x</p>')
    assert inline_script_problems("<style>p { color: red }</style>")


def test_the_project_has_template_folders_to_scan() -> None:
    templates = [path for folder in TEMPLATE_DIRS for path in folder.rglob("*.html")]
    assert ROOT / "templates" / "base.html" in templates
    assert any("connectors/templates" in str(path) for path in templates)


@pytest.mark.parametrize(
    "template",
    [
        pytest.param(path, id=str(path.relative_to(ROOT)))
        for folder in TEMPLATE_DIRS
        for path in sorted(folder.rglob("*.html"))
    ],
)
def test_no_template_contains_inline_script_or_styles(template: Path) -> None:
    assert inline_script_problems(template.read_text()) == []


def test_no_python_module_writes_inline_script_into_html() -> None:
    sources = [
        path
        for path in ROOT.glob("*/**/*.py")
        if path.parts[len(ROOT.parts)] not in (".venv", "tests", "bench", "var")
    ]
    assert sources
    offenders = [str(p) for p in sources if re.search(r"<script|\bonclick=", p.read_text())]
    assert offenders == []


# --- behind a TLS proxy ----------------------------------------------------------------------

SECURE_SETTINGS = (
    "SECURE_PROXY_SSL_HEADER",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_SSL_REDIRECT",
    "SECURE_REDIRECT_EXEMPT",
)


def settings_with(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Import the settings in a fresh interpreter with ``environ`` on top of this one's."""
    code = (
        "import json; from django.conf import settings; import django; django.setup(); "
        f"names = {SECURE_SETTINGS!r}; "
        "print(json.dumps({name: getattr(settings, name, None) for name in names}))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "smtpadmin.settings", **environ}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def secure_proxy_settings() -> dict[str, Any]:
    done = settings_with({"SMTPADMIN_SECURE_PROXY": "true"})
    assert done.returncode == 0, done.stderr
    values: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    values["SECURE_PROXY_SSL_HEADER"] = tuple(values["SECURE_PROXY_SSL_HEADER"])
    return values


def test_the_secure_proxy_setting_turns_on_secure_cookies_hsts_and_the_redirect(
    secure_proxy_settings: dict[str, Any],
) -> None:
    assert secure_proxy_settings == {
        "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": False,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_REDIRECT_EXEMPT": [r"^(healthz|readyz)/?$"],
    }


def test_without_the_secure_proxy_setting_plain_http_keeps_working() -> None:
    done = settings_with({"SMTPADMIN_SECURE_PROXY": "false"})
    assert done.returncode == 0, done.stderr
    values = json.loads(done.stdout.strip().splitlines()[-1])
    assert values["SECURE_PROXY_SSL_HEADER"] is None
    assert values["SESSION_COOKIE_SECURE"] is False
    assert values["SECURE_HSTS_SECONDS"] == 0
    assert values["SECURE_SSL_REDIRECT"] is False


def test_a_secure_proxy_value_that_is_not_a_boolean_stops_the_start() -> None:
    done = settings_with({"SMTPADMIN_SECURE_PROXY": "maybe"})
    assert done.returncode != 0
    assert "SMTPADMIN_SECURE_PROXY='maybe' is not a boolean" in done.stderr


@pytest.mark.django_db
def test_behind_the_proxy_login_sets_secure_cookies_and_hsts(
    secure_proxy_settings: dict[str, Any], full_admin: User
) -> None:
    with override_settings(**secure_proxy_settings):
        client = Client(HTTP_X_FORWARDED_PROTO="https")
        form = client.get("/login/")
        assert form.status_code == 200
        assert form["Strict-Transport-Security"] == "max-age=31536000"
        assert form.cookies["csrftoken"]["secure"]
        response = client.post("/login/", {"username": full_admin.username, "password": PASSWORD})
        assert response.status_code == 302
        session = response.cookies["sessionid"]
        assert session["secure"] and session["httponly"]
        assert session["samesite"] == "Lax"
        assert response["Strict-Transport-Security"] == "max-age=31536000"
        assert_hardened(response)


@pytest.mark.django_db
def test_behind_the_proxy_plain_http_is_redirected_to_https_without_hsts(
    secure_proxy_settings: dict[str, Any],
) -> None:
    with override_settings(**secure_proxy_settings):
        response = Client().get("/login/?next=/servers/", HTTP_HOST="localhost")
        assert response.status_code == 301
        assert response["Location"] == "https://localhost/login/?next=/servers/"
        # HSTS is only ever sent over HTTPS (a browser ignores it on plain HTTP anyway).
        assert "Strict-Transport-Security" not in response
        # An internal health check over plain HTTP is not redirected.
        assert Client().get("/healthz").status_code == 200


@pytest.mark.django_db
def test_the_api_over_https_behind_the_proxy_sends_hsts(
    secure_proxy_settings: dict[str, Any], full_admin: User
) -> None:
    with override_settings(**secure_proxy_settings):
        client = APIClient(HTTP_X_FORWARDED_PROTO="https")
        client.force_authenticate(full_admin)
        response = client.get("/api/v1/servers/")
        assert response.status_code == 200
        assert response["Strict-Transport-Security"] == "max-age=31536000"
        assert_hardened(response)


# --- check --deploy --------------------------------------------------------------------------


def compose_environment() -> dict[str, str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return {str(k): str(v) for k, v in compose["x-smtpadmin"]["environment"].items()}


def test_docker_compose_runs_the_console_behind_a_tls_proxy() -> None:
    assert compose_environment()["SMTPADMIN_SECURE_PROXY"] == "true"


def test_deploy_checks_pass_with_the_production_settings_of_docker_compose(
    tmp_path: Path,
) -> None:
    environ = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "mail.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://mail.example.com",
        "SMTPADMIN_SECURE_PROXY": compose_environment()["SMTPADMIN_SECURE_PROXY"],
        "SMTPADMIN_VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout
