"""Settings for the CRM, read from the environment.

Every value comes from an environment variable (django-environ); production differs from a
first run only by environment. A malformed value fails at start-up naming the variable.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()


def _read(name: str, cast, default):  # type: ignore[no-untyped-def]
    try:
        return cast(name, default=default)
    except (ValueError, ImproperlyConfigured) as exc:
        raise ImproperlyConfigured(f"The environment variable {name} is malformed: {exc}") from exc


# --- Local state ---------------------------------------------------------------------------
# The embedded default keeps everything under var/: database, files, generated secrets.
VAR_DIR = Path(_read("CRM_VAR_DIR", env.str, str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _persisted_secret(name: str) -> str:
    """A secret from the environment, else one generated once and kept in var/ (first runs)."""
    value = _read(name, env.str, "")
    if value:
        return value
    path = VAR_DIR / name.lower()
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


# --- Core ----------------------------------------------------------------------------------
SECRET_KEY = _persisted_secret("SECRET_KEY")
DEBUG = _read("DEBUG", env.bool, False)
ALLOWED_HOSTS = _read("ALLOWED_HOSTS", env.list, ["127.0.0.1", "localhost"])
CRM_BASE_URL = _read("CRM_BASE_URL", env.str, "http://127.0.0.1:8000")
CSRF_TRUSTED_ORIGINS = _read("CSRF_TRUSTED_ORIGINS", env.list, [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "axes",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_celery_beat",
    "crm",
    "licensing",
    "mailconnector",
    "mailconverter",
]

MIDDLEWARE = [
    # First: preflights are answered before anything else looks at the request.
    "corsheaders.middleware.CorsMiddleware",
    "mailconnector.api.middleware.UploadLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "crm.web.middleware.SecurityHeadersMiddleware",
    # Last, so that it sees the outcome of authentication (django-axes' rule).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "crm.urls"
WSGI_APPLICATION = "crm.wsgi.application"
ASGI_APPLICATION = "crm.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "crm.web.context.crm",
            ],
        },
    },
]

# --- Database ------------------------------------------------------------------------------
# SQLite file by default (first run); PostgreSQL in production through DATABASE_URL.
DATABASES = {
    "default": _read("DATABASE_URL", env.db_url, f"sqlite:///{VAR_DIR / 'crm.sqlite3'}"),
}
DATABASES["default"].setdefault("CONN_MAX_AGE", _read("CONN_MAX_AGE", env.int, 60))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Parameters bound by the server: email bodies are not escaped into the SQL text, and
    # psycopg prepares a statement a connection has run this many times, so PostgreSQL plans
    # it once (Django turns preparing off unless told: 0 disables it, for a transaction-mode
    # pooler that cannot keep prepared statements).
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options["server_side_binding"] = True
    _prepare = _read("DATABASE_PREPARE_THRESHOLD", env.int, 2)
    _options["prepare_threshold"] = _prepare if _prepare > 0 else None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and tasks -----------------------------------------------------------------------
# Without Redis (the embedded default) the cache is per process and tasks run in-process.
REDIS_URL = _read("REDIS_URL", env.str, "")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "crm.cache.ReusedClientRedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
# One periodic scan per mailbox, held in the database (mailconverter.schedule).
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Fixed entries (the DatabaseScheduler copies them into its table at start): outgoing mail
# whose retry is due is sent again even when its Celery retry was lost or never scheduled
# (in-process tasks schedule none).
CELERY_BEAT_SCHEDULE = {
    "retry-due-outgoing-mail": {"task": "crm.tasks.retry_due_outgoing", "schedule": 60.0},
}

# --- Authentication ------------------------------------------------------------------------
AUTH_USER_MODEL = "crm.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "crm:home"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Login throttling (django-axes): locked by user and IP together after repeated failures.
AXES_FAILURE_LIMIT = _read("AXES_FAILURE_LIMIT", env.int, 5)
AXES_COOLOFF_TIME = _read("AXES_COOLOFF_MINUTES", env.int, 15) / 60
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_ENABLED = _read("AXES_ENABLED", env.bool, True)
AXES_VERBOSE = False

# --- Internationalisation ------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = _read("TIME_ZONE", env.str, "UTC")
USE_I18N = True
USE_TZ = True

# --- Files ---------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_URL = "media/"
MEDIA_ROOT = Path(_read("MEDIA_ROOT", env.str, str(VAR_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# --- Security ------------------------------------------------------------------------------
# Production sets SECURE=1 behind its TLS proxy; the first run is plain HTTP on loopback.
SECURE = _read("SECURE", env.bool, False)
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SECURE_SSL_REDIRECT = SECURE
SECURE_HSTS_SECONDS = 31536000 if SECURE else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_HSTS_PRELOAD = SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if SECURE else None
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = _read("SESSION_COOKIE_AGE", env.int, 60 * 60 * 12)
X_FRAME_OPTIONS = "DENY"

# --- CRM -----------------------------------------------------------------------------------
CRM_PAGE_SIZE = _read("CRM_PAGE_SIZE", env.int, 50)
# How long computed privileges stay cached; any change to roles, profiles, groups, sharing
# or users invalidates them at once, so this only bounds memory.
CRM_PRIVILEGES_CACHE_SECONDS = _read("CRM_PRIVILEGES_CACHE_SECONDS", env.int, 3600)
# The largest email the CRM sends (bodies and attachments, before encoding), in bytes.
CRM_MAIL_MAX_BYTES = _read("CRM_MAIL_MAX_BYTES", env.int, 25 * 1024 * 1024)
# Outgoing mail the server could not take is tried again after this many seconds, then after
# twice as long each time (at most an hour apart), 8 attempts in all.
CRM_MAIL_RETRY_SECONDS = _read("CRM_MAIL_RETRY_SECONDS", env.int, 60)

# --- Mail connector (the Outlook add-in's API) ---------------------------------------------
ADDIN_ALLOWED_ORIGINS = _read("ADDIN_ALLOWED_ORIGINS", env.list, [])
ADDIN_MIN_VERSION = _read("ADDIN_MIN_VERSION", env.str, "1.0.0")
# The largest email the add-in may upload, in bytes (answered 413 beyond it).
ADDIN_MAX_EMAIL_BYTES = _read("ADDIN_MAX_EMAIL_BYTES", env.int, 40 * 1024 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["mailconnector.auth.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["mailconnector.api.permissions.ConnectorUser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "mailconnector.api.errors.problem_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "CRM Mail Connector API",
    "DESCRIPTION": (
        "The CRM side of the Outlook add-in. Errors are application/problem+json "
        "{type, title, status, detail, code}."
    ),
    "SCHEMA_PATH_PREFIX": "/api/addin/v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# CORS only on the add-in API, only for the add-in's origins, never with credentials.
CORS_URLS_REGEX = r"^/api/addin/.*$"
CORS_ALLOWED_ORIGINS = ADDIN_ALLOWED_ORIGINS
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_HEADERS = ["authorization", "content-type", "idempotency-key", "x-addin-version"]
CORS_EXPOSE_HEADERS = ["retry-after"]
CORS_PREFLIGHT_MAX_AGE = 86400
CORS_ALLOW_PRIVATE_NETWORK = True

# --- Mail converter ------------------------------------------------------------------------
# Keys that encrypt secrets at rest (mailbox, OAuth2 and SMTP passwords; Fernet):
# comma-separated, the first encrypts, all decrypt, so a key is rotated by putting the new one
# first and running `manage.py rotate_secrets`. Each entry is a Fernet key
# (`Fernet.generate_key()`) or any passphrase (stretched with SHA-256). Unset: a key derived
# from SECRET_KEY, so changing SECRET_KEY then makes stored mailbox passwords unreadable.
FIELD_ENCRYPTION_KEY = _read("FIELD_ENCRYPTION_KEY", env.str, "")
# A message larger than this is quarantined as oversize without being fetched whole.
CONVERTER_MAX_MESSAGE_BYTES = _read("CONVERTER_MAX_MESSAGE_BYTES", env.int, 25 * 1024 * 1024)
# Loop guard: at most this many new tickets per sender per window (minutes).
CONVERTER_SENDER_TICKET_LIMIT = _read("CONVERTER_SENDER_TICKET_LIMIT", env.int, 10)
CONVERTER_SENDER_WINDOW_MINUTES = _read("CONVERTER_SENDER_WINDOW_MINUTES", env.int, 60)
# A failing message is retried on this many scans, then waits for an administrator's retry.
CONVERTER_MAX_ATTEMPTS = _read("CONVERTER_MAX_ATTEMPTS", env.int, 3)
# Seconds before a silent IMAP server is given up on.
CONVERTER_SOCKET_TIMEOUT = _read("CONVERTER_SOCKET_TIMEOUT", env.int, 60)
# A scan holds its mailbox's lease this long past its last sign of life (crashed holders).
CONVERTER_LEASE_SECONDS = _read("CONVERTER_LEASE_SECONDS", env.int, 300)
# Messages fetched per round trip, and the bytes one batch may hold.
CONVERTER_FETCH_BATCH = _read("CONVERTER_FETCH_BATCH", env.int, 50)
CONVERTER_FETCH_BATCH_BYTES = _read("CONVERTER_FETCH_BATCH_BYTES", env.int, 32 * 1024 * 1024)
# Processes converting one scan's messages side by side (PostgreSQL only; 1: the scan's own
# process alone), forked once a folder has at least CONVERTER_WORKERS_FROM new messages.
CONVERTER_WORKERS = _read("CONVERTER_WORKERS", env.int, min(os.cpu_count() or 1, 4))
CONVERTER_WORKERS_FROM = _read("CONVERTER_WORKERS_FROM", env.int, 40)
# Directories of .eml files a mailbox may read instead of a server (host "local:<dir>",
# mailconverter.localsource), comma-separated; relative to the project. Default: the sample.
CONVERTER_LOCAL_SOURCES = _read(
    "CONVERTER_LOCAL_SOURCES", env.list, [str(BASE_DIR / "fixtures" / "sample_mailbox")]
)
# "Connect with Microsoft / Google" on a mailbox (XOAUTH2 consent, mailconverter.oauth2): the
# providers' endpoints and scopes. A single-tenant app registration puts its tenant id in place
# of "common". The redirect URI to register is CRM_BASE_URL + /settings/mail-converter/oauth2/.
_MICROSOFT = "https://login.microsoftonline.com/common/oauth2/v2.0"
CONVERTER_OAUTH2_MICROSOFT_AUTHORIZE_URL = _read(
    "CONVERTER_OAUTH2_MICROSOFT_AUTHORIZE_URL", env.str, f"{_MICROSOFT}/authorize"
)
CONVERTER_OAUTH2_MICROSOFT_TOKEN_URL = _read(
    "CONVERTER_OAUTH2_MICROSOFT_TOKEN_URL", env.str, f"{_MICROSOFT}/token"
)
CONVERTER_OAUTH2_MICROSOFT_SCOPE = _read(
    "CONVERTER_OAUTH2_MICROSOFT_SCOPE",
    env.str,
    "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
)
CONVERTER_OAUTH2_GOOGLE_AUTHORIZE_URL = _read(
    "CONVERTER_OAUTH2_GOOGLE_AUTHORIZE_URL", env.str, "https://accounts.google.com/o/oauth2/v2/auth"
)
CONVERTER_OAUTH2_GOOGLE_TOKEN_URL = _read(
    "CONVERTER_OAUTH2_GOOGLE_TOKEN_URL", env.str, "https://oauth2.googleapis.com/token"
)
CONVERTER_OAUTH2_GOOGLE_SCOPE = _read(
    "CONVERTER_OAUTH2_GOOGLE_SCOPE", env.str, "https://mail.google.com/"
)

# --- Single sign-on ------------------------------------------------------------------------
# OpenID Connect providers offered by the add-in ("Sign in with ..."), as a JSON list in
# ADDIN_SSO_PROVIDERS, one object per provider:
#   {"id": "entra", "name": "Microsoft Entra ID",
#    "issuer": "https://login.microsoftonline.com/<tenant>/v2.0", "client_id": "...",
#    "scopes": "openid email profile", "claim": "email", "match": "email"}
# Optional: "discovery_url" (default: issuer + /.well-known/openid-configuration),
# "signing_algs" (default ["RS256"]), "require_verified_email" (default true: when matching on
# email, the provider must say email_verified). "match" is how the claim finds the CRM user:
# "email" (case-insensitive) or "username". Users are never created. The client secret comes
# only from ADDIN_SSO_<ID>_CLIENT_SECRET (the id upper-cased, "-" as "_"), never the JSON.
# The provider's redirect URI is CRM_BASE_URL + /api/addin/v1/auth/sso/callback.
_SSO_KEYS = {"id", "name", "issuer", "discovery_url", "client_id", "scopes", "claim", "match"}
_SSO_KEYS |= {"signing_algs", "require_verified_email"}


def _sso_providers() -> list[dict[str, object]]:
    import json
    import re
    from urllib.parse import urlsplit

    def bad(why: str) -> ImproperlyConfigured:
        return ImproperlyConfigured(
            f"The environment variable ADDIN_SSO_PROVIDERS is malformed: {why}"
        )

    def https(url: object) -> bool:  # plain http only for a provider on loopback (tests)
        if not isinstance(url, str):
            return False
        parts = urlsplit(url)
        loopback = parts.hostname in {"127.0.0.1", "localhost", "::1"}
        return parts.scheme == "https" or (parts.scheme == "http" and loopback)

    try:
        raw = json.loads(_read("ADDIN_SSO_PROVIDERS", env.str, "") or "[]")
    except ValueError as exc:
        raise bad(f"not JSON ({exc})") from exc
    if not isinstance(raw, list) or not all(isinstance(p, dict) for p in raw):
        raise bad("expected a JSON list of objects")
    providers: list[dict[str, object]] = []
    for p in raw:
        pid = p.get("id")
        if not isinstance(pid, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", pid):
            raise bad(f"id {pid!r} must be 1-32 of a-z, 0-9 and '-'")
        if unknown := set(p) - _SSO_KEYS:
            raise bad(f"provider {pid}: unknown keys {sorted(unknown)} (secrets go elsewhere)")
        for key in ("name", "issuer", "client_id"):
            if not isinstance(p.get(key), str) or not p[key]:
                raise bad(f"provider {pid}: {key} is required")
        discovery = p.get("discovery_url") or (
            p["issuer"].rstrip("/") + "/.well-known/openid-configuration"
        )
        if not https(p["issuer"]) or not https(discovery):
            raise bad(f"provider {pid}: the issuer and discovery_url must be https URLs")
        scopes = p.get("scopes", "openid email profile")
        if not isinstance(scopes, str) or "openid" not in scopes.split():
            raise bad(f"provider {pid}: scopes must be a string that includes 'openid'")
        claim = p.get("claim", "email")
        match = p.get("match", "email" if claim == "email" else "username")
        if not isinstance(claim, str) or match not in {"email", "username"}:
            raise bad(f"provider {pid}: claim is a claim name, match 'email' or 'username'")
        algs = p.get("signing_algs", ["RS256"])
        asymmetric = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"}
        if not isinstance(algs, list) or not algs or not set(algs) <= asymmetric:
            raise bad(f"provider {pid}: signing_algs must list asymmetric JWS algorithms")
        verified = p.get("require_verified_email", True)
        if not isinstance(verified, bool):
            raise bad(f"provider {pid}: require_verified_email must be true or false")
        secret_var = f"ADDIN_SSO_{pid.upper().replace('-', '_')}_CLIENT_SECRET"
        secret = _read(secret_var, env.str, "")
        if not secret:
            raise ImproperlyConfigured(f"The environment variable {secret_var} is not set.")
        providers.append(
            {
                "id": pid,
                "name": p["name"],
                "issuer": p["issuer"],
                "discovery_url": discovery,
                "client_id": p["client_id"],
                "client_secret": secret,
                "scopes": scopes,
                "claim": claim,
                "match": match,
                "signing_algs": algs,
                "require_verified_email": verified,
            }
        )
    if len({p["id"] for p in providers}) != len(providers):
        raise bad("two providers have the same id")
    return providers


ADDIN_SSO_PROVIDERS = _sso_providers()
# Seconds the CRM waits for the identity provider (discovery, keys, code exchange).
ADDIN_SSO_HTTP_TIMEOUT = _read("ADDIN_SSO_HTTP_TIMEOUT", env.float, 10.0)

# --- Licensing -----------------------------------------------------------------------------
# The license vendor's Ed25519 public key: the raw 32 bytes in base64 (44 characters, as
# `manage.py license_keygen` prints it; PEM is accepted too). License keys are verified with
# it; the CRM never holds the private key. Empty: no key can be activated, connector inactive.
LICENSE_PUBLIC_KEY = _read("LICENSE_PUBLIC_KEY", env.str, "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": _read("LOG_LEVEL", env.str, "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
