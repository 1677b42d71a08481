"""Settings for smtpadmin. Every value that differs between installations comes from the
environment (see README "Configuration"); everything else is fixed here."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import Any

import dj_database_url
from kombu import Exchange, Queue

from smtpadmin.env import EnvironmentError_, env_bool, env_int, env_list, env_networks, env_str
from smtpadmin.private import private_directory

BASE_DIR = Path(__file__).resolve().parent.parent
# Runtime state of the embedded setup (SQLite file, broker folders, Maildirs, logs).
VAR_DIR = Path(env_str("SMTPADMIN_VAR_DIR", str(BASE_DIR / "var")))


def _secret_key() -> str:
    """SECRET_KEY, else one generated once into var/secret_key (mode 600), so that the
    embedded setup's processes agree on it and logins survive a restart."""
    key = env_str("SECRET_KEY", "")
    if key:
        return key
    path = VAR_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        private_directory(VAR_DIR)
        key = secrets.token_urlsafe(50)
        try:
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(key)
        except FileExistsError:  # another process got there first: use its key
            return path.read_text().strip()
        return key


# Signs sessions and CSRF tokens; default: generated once into var/secret_key.
SECRET_KEY = _secret_key()
# Development conveniences (tracebacks in pages); never on in production.
DEBUG = env_bool("DEBUG", False)
# Host names the web console answers to.
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
# Origins trusted for CSRF when the console sits behind a TLS proxy (https://mail.example.com).
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Reverse proxies (IPs / CIDRs, comma-separated) whose X-Forwarded-For names the client; empty =
# the header is ignored.
SMTPADMIN_TRUSTED_PROXIES = env_networks("SMTPADMIN_TRUSTED_PROXIES", [])
# The name of the server row this host's relay worker runs as (runrelay --server overrides).
SMTPADMIN_SERVER_NAME = env_str("SMTPADMIN_SERVER_NAME", socket.gethostname().split(".")[0])
# Password of the `admin` user created by `make run` (of no other user); generated when unset.
SMTPADMIN_ADMIN_PASSWORD = env_str("SMTPADMIN_ADMIN_PASSWORD", "")
# Intake processes of the relay worker (runrelay --processes overrides): they share the SMTP
# ports; 1 = everything in one process; 0 = one per core.
SMTPADMIN_RELAY_PROCESSES = env_int("SMTPADMIN_RELAY_PROCESSES", 0, minimum=0)
# Seconds between two writes of a process's counters (the dashboard and /metrics): counting costs
# no database statement per message, one transaction per process this often.
SMTPADMIN_COUNTER_FLUSH_SECONDS = env_int("SMTPADMIN_COUNTER_FLUSH_SECONDS", 10, minimum=1)
# /metrics (Prometheus): besides any administrator's API token, a scrape token of its own
# ("Authorization: Bearer <token>") and/or client addresses or networks allowed without one.
SMTPADMIN_METRICS_TOKEN = env_str("SMTPADMIN_METRICS_TOKEN", "")
SMTPADMIN_METRICS_ALLOW = env_networks("SMTPADMIN_METRICS_ALLOW", [])
# Seconds without a heartbeat after which a server is shown as "not responding".
SMTPADMIN_HEARTBEAT_TIMEOUT = env_int("SMTPADMIN_HEARTBEAT_TIMEOUT", 30, minimum=5)
# Seconds between two refreshes of the dashboard's figures in an open browser window.
SMTPADMIN_DASHBOARD_REFRESH_SECONDS = env_int("SMTPADMIN_DASHBOARD_REFRESH_SECONDS", 30, minimum=5)
# DNS servers of the relay when a virtual server names none: "ip", "ip:port" or "[v6]:port"
# (comma-separated); empty = the system resolver (/etc/resolv.conf).
SMTPADMIN_DNS_SERVERS = env_list("SMTPADMIN_DNS_SERVERS", [])
# Seconds a Celery worker holds the queue entries it is delivering; when a worker dies, its
# entries are due again once this has passed.
SMTPADMIN_DELIVERY_LEASE_SECONDS = env_int("SMTPADMIN_DELIVERY_LEASE_SECONDS", 600, minimum=1)
# Seconds an outbound connection whose queue has no more due mail stays open for mail queued to
# the same queue meanwhile (Postfix's smtp_connection_cache_time_limit); 0 = QUIT at once.
SMTPADMIN_DELIVERY_CONNECTION_CACHE_SECONDS = env_int(
    "SMTPADMIN_DELIVERY_CONNECTION_CACHE_SECONDS", 2, minimum=0
)
# Seconds the relay holds a local (Maildir) delivery; when the relay dies, that mail is due again
# once this has passed. Short: writing a Maildir file takes milliseconds and is idempotent.
SMTPADMIN_LOCAL_DELIVERY_LEASE_SECONDS = env_int(
    "SMTPADMIN_LOCAL_DELIVERY_LEASE_SECONDS", 60, minimum=1
)
# A PEM file of the CA certificates trusted for next hops' TLS instead of the system's (a
# private CA for smart hosts); blank = the system's.
SMTPADMIN_OUTBOUND_CA_FILE = env_str("SMTPADMIN_OUTBOUND_CA_FILE", "")
# Seconds the relay remembers a successful SMTP AUTH password check (per process, in memory), so
# that clients authenticating on every connection do not cost a password hash each time; a
# password change, disabling or deleting the credential ends it at once. 0 = off.
SMTPADMIN_AUTH_CACHE_SECONDS = env_int("SMTPADMIN_AUTH_CACHE_SECONDS", 300, minimum=0)
# Publish a delivery task the moment mail is queued (off: only the sweeper finds it, within
# seconds; tests that run no Celery worker turn it off so the broker does not fill up).
SMTPADMIN_DELIVERY_ENQUEUE = env_bool("SMTPADMIN_DELIVERY_ENQUEUE", True)
# Message tracking retention (beat's hourly prune): rows per DELETE statement, and seconds one
# run may take (the rest is the next run's), so pruning never holds a table or a worker long.
SMTPADMIN_PRUNE_BATCH = env_int("SMTPADMIN_PRUNE_BATCH", 1000, minimum=1, maximum=100_000)
SMTPADMIN_PRUNE_SECONDS = env_int("SMTPADMIN_PRUNE_SECONDS", 60, minimum=1)
# Minutes without progress after which beat hands an unfinished bulk job to a worker again
# (its worker died, or the broker lost its task); the job goes on after its cursor.
SMTPADMIN_JOB_STALL_MINUTES = env_int("SMTPADMIN_JOB_STALL_MINUTES", 5, minimum=1)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from here, not from a CDN
    "smtpadmin.apps.SmtpadminConfig",
    "servers.apps.ServersConfig",
    "connectors.apps.ConnectorsConfig",
    "relay.apps.RelayConfig",
]

MIDDLEWARE = [
    # /healthz and /readyz, answered before host validation and the HTTPS redirect.
    "smtpadmin.health.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "smtpadmin.csp.ContentSecurityPolicyMiddleware",  # no inline script, no framing
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files without a separate server
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "smtpadmin.urls"
WSGI_APPLICATION = "smtpadmin.wsgi.application"
ASGI_APPLICATION = "smtpadmin.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "smtpadmin.context.console",
            ],
        },
    },
]


def _database(url: str) -> dict[str, Any]:
    try:
        config: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=60))
    except Exception as exc:  # dj-database-url raises a bare ValueError/KeyError on odd input
        raise EnvironmentError_(f"DATABASE_URL={url!r} cannot be used: {exc}") from None
    engine = config.get("ENGINE", "")
    if engine not in ("django.db.backends.postgresql", "django.db.backends.sqlite3"):
        raise EnvironmentError_(f"DATABASE_URL engine {engine!r} is not supported")
    if engine == "django.db.backends.sqlite3":
        # A connection per request and per thread, closed after use: threads that end (the
        # web server's, the tests') leave no open handle on the file. The relay's writer
        # keeps its one connection open itself (relay.smtp.runtime), the hot path's.
        config["CONN_MAX_AGE"] = 0
        # Several processes (web, relay, workers) share the file: wait for locks, use WAL.
        config["OPTIONS"] = {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        # Tests run the relay worker in threads and subprocesses next to the test itself: they
        # need a file every connection can open, not a private in-memory database (one per
        # test run, so runs side by side do not share it).
        config["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
    else:
        config["CONN_HEALTH_CHECKS"] = True
    return config


# Where configuration, messages and queues live: postgres://user:pass@host:5432/name or sqlite:///path.
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'smtpadmin.sqlite3'}")
DATABASES = {"default": _database(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = 8 * 3600  # a working day; a forgotten console tab does not stay logged in
CSRF_COOKIE_HTTPONLY = False  # htmx reads it to send X-CSRFToken
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Behind a TLS proxy that sets X-Forwarded-Proto: Secure cookies, HSTS, redirect to HTTPS.
SMTPADMIN_SECURE_PROXY = env_bool("SMTPADMIN_SECURE_PROXY", False)
if SMTPADMIN_SECURE_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # Subdomains are left out: other hosts of the mail domain may still serve plain HTTP.
    SECURE_HSTS_SECONDS = 365 * 24 * 3600
    SECURE_SSL_REDIRECT = True
    # Health checks from the container or host itself come over plain HTTP without the proxy.
    SECURE_REDIRECT_EXEMPT = [r"^(healthz|readyz)/?$"]
    # includeSubDomains and preload bind every host of the mail domain to HTTPS for a year: the
    # domain owner's decision, not one the console can make for them.
    SILENCED_SYSTEM_CHECKS = ["security.W005", "security.W021"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["smtpadmin.roles.RolePermission"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "smtpadmin.api_filters.FilterBackend",  # yes/no filters refuse other values
        "rest_framework.filters.OrderingFilter",
        "rest_framework.filters.SearchFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "smtpadmin.api.exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "smtpadmin API",
    "DESCRIPTION": "Configure servers, SMTP virtual servers and SMTP connectors; "
    "read queues, messages, tracking events and the audit log.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ListModeEnum": "servers.models.virtual_server.ListMode",
        "TlsModeEnum": "servers.models.virtual_server.TlsMode",
        "OutboundAuthEnum": "servers.models.virtual_server.OutboundAuth",
        "ScheduleModeEnum": "connectors.models.ScheduleMode",
        "QueueStateEnum": "relay.admin.viewer.QueueState",
        "MessageStateEnum": "relay.api_serializers.MESSAGE_STATES",
        "RecipientStateEnum": "relay.queue.models.Recipient.State",
        "QueueEntryStateEnum": "relay.queue.models.QueueEntry.State",
    },
    # Every operation documents the error answers it can give (smtpadmin/api_schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "smtpadmin.api_schema.add_error_responses",
    ],
}

# Celery: Redis in production; by default an embedded filesystem broker that needs no server
# (smtpadmin/broker.py: kombu's filesystem transport with atomic publishing and nothing left
# behind). Its consumers poll the queue folder: every 50 ms costs an idle worker about half a
# percent of a core; kombu's default of 1 s held every task up to a second (one connection's
# worth of mail per second and queue).
_BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
_EMBEDDED_BROKER = CELERY_BROKER_URL.startswith("filesystem")
CELERY_BROKER_TRANSPORT = "smtpadmin.broker:Transport" if _EMBEDDED_BROKER else None
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = (
    {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "control_folder": str(_BROKER_DIR / "control"),
        # Tasks being published or taken (each there for one small write or read).
        "processed_folder": str(_BROKER_DIR / "processed"),
        "polling_interval": 0.05,
    }
    if _EMBEDDED_BROKER
    else {"visibility_timeout": 3600}
)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# The sweeper: due retries, expired leases, expirations and delay notifications, and work a lost
# broker forgot. The retry times themselves are database columns, never ETAs on the broker.
CELERY_BEAT_SCHEDULE = {
    # A sweep that waited longer than two periods is dropped: the next one does its work.
    "relay-sweep": {"task": "relay.tasks.sweep", "schedule": 5.0, "options": {"expires": 10}},
    # Message tracking retention: events and finished messages older than it, in batches.
    "relay-prune": {
        "task": "relay.maintenance.prune_history",
        "schedule": 3600.0,
        "options": {"expires": 1800},
    },
    # Bulk jobs whose worker died (or whose task the broker lost) are published again.
    "relay-stalled-jobs": {
        "task": "relay.maintenance.resume_stalled_jobs",
        "schedule": 60.0,
        "options": {"expires": 120},
    },
    # The dashboard's queue depth chart: a sample twice a minute (the last one of a minute
    # stays), so a late beat never leaves a minute out.
    "dashboard-queue-depth": {
        "task": "relay.dashboard.sample_queue_depth",
        "schedule": 30.0,
        "options": {"expires": 30},
    },
    # The counters' minutes older than a week (the dashboard shows 24 hours; totals stay).
    "counters-prune": {
        "task": "smtpadmin.tasks.prune_counters",
        "schedule": 3600.0,
        "options": {"expires": 1800},
    },
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Beat's sweep has a queue of its own, so it never waits behind a backlog of deliveries (a
# free worker process takes it next). A worker started without -Q consumes every queue
# declared here; `celery -A smtpadmin worker -Q sweep` would give it a process of its own.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = (
    Queue("celery", Exchange("celery"), routing_key="celery"),
    Queue("sweep", Exchange("sweep"), routing_key="sweep"),
)
CELERY_TASK_ROUTES = {
    "relay.tasks.sweep": {"queue": "sweep"},
    "relay.dashboard.sample_queue_depth": {"queue": "sweep"},
}

# "plain" (one readable line) or "json" (one JSON object per line, for log shippers).
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise EnvironmentError_(f"LOG_FORMAT={LOG_FORMAT!r}: use plain or json.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "smtpadmin.logformat.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
