"""Django settings for Tally, read from the environment (see README, "Configuration")."""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse_lazy

from config.env import env_bool, env_int, env_json, env_list, env_str
from config.rate_limits import merge_rate_limits

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = env_str("SECRET_KEY")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # Before the admin: its templates override the stock ones.
    "unfold",
    "unfold.contrib.filters",
    "unfold.contrib.forms",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Before WhiteNoise's: tenants' runserver extends it to read chunked bodies.
    "tenants",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "oauth2_provider",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "parameters",
    "collection",
    "metering",
    "streams",
    "reporting",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "common.api.limits.RequestSizeLimitMiddleware",
    "common.api.ratelimit.RateLimitHeadersMiddleware",
    "common.api.errors.DatabaseUnavailableMiddleware",
    # Counts operators' API calls in Redis (tenants.accounting), whatever the answer.
    "tenants.middleware.ApiCallAccountingMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
# Routes are exact (`/oauth/token`, not `/oauth/token/`); a redirect would drop POST bodies.
APPEND_SLASH = False

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
            ],
            # The dashboards' filters (exact quantities, percentages).
            "libraries": {"tally_web": "reporting.web.templatetags"},
        },
    },
]

# PostgreSQL only: the embedded default runs the same engine as production.
try:
    DATABASES = {"default": dj_database_url.parse(env_str("DATABASE_URL"), conn_max_age=60)}
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL cannot be read: {exc}") from None
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("DATABASE_URL must point at PostgreSQL (postgres://…).")
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
# Every key Tally writes starts with this, so deployments (or test runs) can share a Redis.
REDIS_KEY_PREFIX = env_str("TALLY_REDIS_PREFIX", "tally")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": REDIS_KEY_PREFIX,
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Operators' people and staff sign in here; the admin keeps its own login page.
LOGIN_URL = "/login/"

# Password-reset mail. The console backend prints messages to the web process's output;
# set EMAIL_BACKEND to django.core.mail.backends.smtp.EmailBackend and EMAIL_HOST etc.
# to send them.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Tally <tally@localhost>")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# The project's own files (the dashboards' stylesheet), beside the apps' static files.
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / ".tally" / "static")))

SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("TRUST_X_FORWARDED_PROTO") else None
)
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# Largest body any endpoint accepts; endpoints set their own lower limits.
DATA_UPLOAD_MAX_MEMORY_SIZE = 6 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.api.authentication.OperatorTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.api.permissions.OperatorScopePermission"],
    "DEFAULT_THROTTLE_CLASSES": ["common.api.throttling.TokenBucketThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["common.api.renderers.DecimalJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["common.api.parsers.DecimalJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "common.api.pagination.LimitSkipPagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "common.api.schema.TallyAutoSchema",
    "EXCEPTION_HANDLER": "common.api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "COERCE_DECIMAL_TO_STRING": False,
    # No OPTIONS metadata: it re-runs permission checks as if for other methods, and the
    # API has no browser clients to describe itself to. OPTIONS answers 405 with Allow.
    "DEFAULT_METADATA_CLASS": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Tally API",
    "DESCRIPTION": (
        "Usage metering and reporting. Operator endpoints take an OAuth2 client-credentials "
        "bearer token from `POST /oauth/token`; platform endpoints take a platform API key."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The docs page's scripts are served by Tally itself, not a CDN: self-hosted installs
    # are often offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # /health reports the database and Redis with one choice set.
    "ENUM_NAME_OVERRIDES": {
        "ReachabilityEnum": ["ok", "unavailable"],
        # One name for the metrics query's field names, wherever they appear.
        "MetricFieldNameEnum": [
            "ACCOUNT_ID",
            "CUSTOMER_ID",
            "SCHEMA_NAME",
            "EVENT_STATUS",
            "USAGE_METER_ID",
        ],
        "MetricNameEnum": [
            "EVENTS",
            "USAGE",
            "METER_USAGE",
            "REVENUE",
            "USAGE_FOR_CYCLE",
            "REVENUE_FOR_CYCLE",
        ],
    },
    # The schema and docs are public: read no credentials there, so a bearer token sent
    # along is neither refused nor charged to a rate-limit group these views do not have.
    "SERVE_AUTHENTICATION": [],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "tenants.api.schema.add_token_endpoint",
        "common.api.schema.patch_bodies_need_a_field",
        "common.api.schema.query_parameters_as_served",
        "parameters.api.schema.add_bulk_delete_body",
        "metering.api.schema.meter_create_names_one_type",
    ],
}

OAUTH2_PROVIDER = {
    "ACCESS_TOKEN_EXPIRE_SECONDS": 3600,
    "SCOPES_BACKEND_CLASS": "tenants.oauth.ApplicationScopes",
    "OAUTH2_VALIDATOR_CLASS": "tenants.oauth.OperatorOAuth2Validator",
    "PKCE_REQUIRED": False,
    # Keep only a SHA-256 checksum of each access token at rest, never the token itself.
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
}
# Named explicitly so that migrations pointing at these swappable models can be written.
OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth2_provider.Application"
OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL = "oauth2_provider.AccessToken"
OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL = "oauth2_provider.RefreshToken"
OAUTH2_PROVIDER_ID_TOKEN_MODEL = "oauth2_provider.IDToken"
OAUTH2_PROVIDER_GRANT_MODEL = "oauth2_provider.Grant"
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)

# Tally's own options, one place, with their defaults.
TALLY = {
    # What clients must send as `audience` to POST /oauth/token: the API's base URL.
    "API_AUDIENCE": env_str("TALLY_API_AUDIENCE", "http://localhost:8000"),
    "RATE_LIMITS": merge_rate_limits(env_json("TALLY_RATE_LIMITS")),
    # Request bodies above this answer 413 unless an endpoint sets its own limit.
    "DEFAULT_MAX_BODY_BYTES": env_int("TALLY_MAX_BODY_BYTES", 1024 * 1024),
    # Seconds a web process may reuse a resolved access token (revocation and suspension
    # take effect within this time); 0 turns the cache off.
    "TOKEN_CACHE_SECONDS": env_int("TALLY_TOKEN_CACHE_SECONDS", 5),
    # Fernet keys for sensitive parameters; the first encrypts, all decrypt.
    "PARAMETER_KEYS": env_list("TALLY_PARAMETER_KEYS", []),
    # Webhook notifications: request timeout, first retry delay (doubling each time, at
    # most an hour) and the number of tries before a notification is marked failed.
    "NOTIFICATION_TIMEOUT_SECONDS": env_int("TALLY_NOTIFICATION_TIMEOUT_SECONDS", 10),
    "NOTIFICATION_RETRY_BASE_SECONDS": env_int("TALLY_NOTIFICATION_RETRY_BASE_SECONDS", 30),
    "NOTIFICATION_MAX_ATTEMPTS": env_int("TALLY_NOTIFICATION_MAX_ATTEMPTS", 8),
    # Workers that share a reset when more than one batch of meters is due at once.
    "RESET_WORKERS": env_int("TALLY_RESET_WORKERS", 2),
    # Online collection: how long one ingestion statement may run before the request
    # answers 503 (and stores nothing); how long a claimed batch may stay IN_PROGRESS
    # before another worker takes it over; records per processing batch; how long an
    # Idempotency-Key counts as in flight, and how long its answer is kept.
    "COLLECTION": {
        "INGEST_STATEMENT_TIMEOUT_MS": env_int("TALLY_INGEST_TIMEOUT_MS", 15000),
        "CLAIM_TIMEOUT_SECONDS": env_int("TALLY_CLAIM_TIMEOUT_SECONDS", 300),
        "PROCESS_BATCH_SIZE": env_int("TALLY_PROCESS_BATCH_SIZE", 500),
        "IDEMPOTENCY_IN_FLIGHT_SECONDS": 60,
        "IDEMPOTENCY_KEY_HOURS": 24,
        # Seconds a web process may reuse an ACTIVE collector found by the ingestion
        # endpoint (the ingestion statement re-checks that it is live); 0 turns it off.
        "COLLECTOR_CACHE_SECONDS": env_int("TALLY_COLLECTOR_CACHE_SECONDS", 5),
    },
    # Usage accounting: hours a count may wait in Redis for the fold (Beat, every
    # minute) before it expires; a Beat stopped longer than this loses counts.
    "USAGE": {
        "REDIS_HOURS": env_int("TALLY_USAGE_REDIS_HOURS", 72),
    },
    # The stream runtime. Scripts (transforms/script): wall-clock milliseconds one node's
    # script may use per batch, V8 heap per script context, bytes of `state.node`.
    # transforms/http: hosts streams may call ("*" or names, comma separated; by default
    # any public address, never loopback, private or link-local ones), request timeout.
    # The stream log keeps this many lines per stream.
    "STREAMS": {
        "SCRIPT_TIME_LIMIT_MS": env_int("TALLY_SCRIPT_TIME_LIMIT_MS", 5000),
        "SCRIPT_MEMORY_LIMIT_MB": env_int("TALLY_SCRIPT_MEMORY_LIMIT_MB", 64),
        "SCRIPT_STATE_MAX_BYTES": env_int("TALLY_SCRIPT_STATE_MAX_BYTES", 64 * 1024),
        "HTTP_ALLOWED_HOSTS": env_list("TALLY_HTTP_ALLOWED_HOSTS", []),
        "HTTP_TIMEOUT_SECONDS": env_int("TALLY_HTTP_TIMEOUT_SECONDS", 10),
        "LOG_MAX_LINES": env_int("TALLY_STREAM_LOG_MAX_LINES", 1000),
    },
    # Metric definitions (/v1/metrics): milliseconds one SQL metric may run before it is
    # stopped; records per backfill step of an indexed metric (each step briefly holds
    # back the processing of the operator's records).
    "METRICS": {
        "SQL_TIMEOUT_MS": env_int("TALLY_METRICS_SQL_TIMEOUT_MS", 5000),
        "BACKFILL_CHUNK": env_int("TALLY_METRICS_BACKFILL_CHUNK", 50000),
    },
}

# Counts wait in Redis at most this long; a year is more than any outage to ride out.
if not 1 <= TALLY["USAGE"]["REDIS_HOURS"] <= 24 * 366:
    raise ImproperlyConfigured("TALLY_USAGE_REDIS_HOURS must be from 1 to 8784 (a year).")

# The admin's look (django-unfold): Tally's name and colours, and a sidebar grouped by
# what staff do. Every model with an admin page is listed in exactly one group (a test
# holds the two together); system internals (Beat, OAuth tokens) sit under System.


def _admin_page(title: str, model: str, icon: str) -> dict:
    """A sidebar entry for a model's admin list, shown to those who may view it."""
    app_label, model_name = model.split(".")

    def may_view(request) -> bool:
        user = request.user
        return user.has_perm(f"{app_label}.view_{model_name}") or user.has_perm(
            f"{app_label}.change_{model_name}"
        )

    return {
        "title": title,
        "icon": icon,
        "link": reverse_lazy(f"admin:{app_label}_{model_name}_changelist"),
        "permission": may_view,
    }


def _page_exists(path: str):
    """Permission for a link to a page outside the admin: staff, once the page is wired."""

    def shown(request) -> bool:
        from django.urls import Resolver404, resolve

        try:
            resolve(path)
        except Resolver404:
            return False
        return request.user.is_staff

    return shown


UNFOLD = {
    "SITE_TITLE": "Tally",
    "SITE_HEADER": "Tally",
    "SITE_SUBHEADER": "Usage metering",
    "SITE_SYMBOL": "speed",
    "SITE_URL": "/",
    "SHOW_VIEW_ON_SITE": False,
    "SITE_DROPDOWN": [
        {"title": "Operator dashboard", "icon": "monitoring", "link": "/dashboard/"},
        {"title": "Platform dashboard", "icon": "insights", "link": "/platform/"},
        {"title": "API documentation", "icon": "api", "link": "/api/docs/"},
    ],
    # Tally teal: white text stays readable on 600 (buttons, the selected page).
    "COLORS": {
        "primary": {
            "50": "oklch(97.8% .016 188)",
            "100": "oklch(94.6% .042 188)",
            "200": "oklch(89.5% .075 188)",
            "300": "oklch(82% .105 188)",
            "400": "oklch(72% .12 188)",
            "500": "oklch(62% .115 190)",
            "600": "oklch(53% .1 192)",
            "700": "oklch(46% .085 194)",
            "800": "oklch(39% .07 196)",
            "900": "oklch(33% .056 198)",
            "950": "oklch(24% .042 200)",
        },
    },
    "SIDEBAR": {
        "show_search": True,
        "show_all_applications": False,
        "navigation": [
            {
                "title": "Operators & access",
                "items": [
                    _admin_page("Operators", "tenants.operator", "domain"),
                    _admin_page("Memberships", "tenants.operatormembership", "badge"),
                    _admin_page("Applications", "tenants.applicationaccess", "key"),
                    _admin_page("Platform API keys", "tenants.platformapikey", "vpn_key"),
                    _admin_page("Users", "auth.user", "person"),
                    _admin_page("Groups", "auth.group", "group"),
                ],
            },
            {
                "title": "Metering",
                "separator": True,
                "items": [
                    _admin_page("Customers", "metering.customer", "people"),
                    _admin_page("Meter types", "metering.metertype", "category"),
                    _admin_page("Meters", "metering.meter", "speed"),
                    _admin_page("Periods", "metering.meterperiod", "history"),
                    _admin_page("Alerts", "metering.alert", "notifications_active"),
                    _admin_page("Notifications", "metering.notification", "send"),
                    _admin_page("Webhook endpoints", "metering.webhookendpoint", "webhook"),
                    _admin_page("Price plans", "metering.priceplan", "sell"),
                    _admin_page("Plan rates", "metering.planrate", "price_change"),
                    _admin_page("Billing accounts", "metering.billingaccount", "wallet"),
                    _admin_page("Plan assignments", "metering.planassignment", "assignment"),
                    _admin_page("Pricing cycles", "metering.cyclerollup", "event_repeat"),
                    _admin_page("Exchange rates", "metering.exchangerate", "currency_exchange"),
                ],
            },
            {
                "title": "Collection",
                "separator": True,
                "items": [
                    _admin_page("Collectors", "collection.collector", "input"),
                    _admin_page("Ingestions", "collection.ingestion", "move_to_inbox"),
                    _admin_page("Records", "collection.record", "receipt_long"),
                ],
            },
            {
                "title": "Streams",
                "separator": True,
                "items": [
                    _admin_page("Solutions", "streams.solution", "folder"),
                    _admin_page("Streams", "streams.stream", "account_tree"),
                    _admin_page("Versions", "streams.streamversion", "history_edu"),
                    _admin_page("Executions", "streams.streamexecution", "play_circle"),
                    _admin_page("Node errors", "streams.nodeerror", "error"),
                    _admin_page("Stream log", "streams.streamlogline", "article"),
                    _admin_page("Connectors", "streams.connector", "cable"),
                    _admin_page("Aggregation stores", "streams.aggregationstore", "inventory_2"),
                    _admin_page("Aggregation sessions", "streams.aggregationsession", "layers"),
                    _admin_page("Aggregation flushes", "streams.aggregationflush", "output"),
                    _admin_page("Parameters", "parameters.parameter", "tune"),
                ],
            },
            {
                "title": "Reporting",
                "separator": True,
                "items": [
                    {
                        "title": "Platform dashboard",
                        "icon": "insights",
                        "link": "/platform/",
                        "permission": _page_exists("/platform/"),
                    },
                    _admin_page("Metric definitions", "reporting.metricdefinition", "functions"),
                    _admin_page("Usage by hour", "metering.usagerollup", "stacked_bar_chart"),
                    _admin_page("Events by hour", "collection.eventrollup", "bar_chart"),
                ],
            },
            {
                "title": "System",
                "separator": True,
                "collapsible": True,
                "items": [
                    _admin_page("Platform settings", "tenants.platformsettings", "settings"),
                    _admin_page("API usage (hourly)", "tenants.usagecounter", "data_usage"),
                    _admin_page("API usage (daily)", "tenants.usagecounterdaily", "data_usage"),
                    _admin_page("API usage (dekads)", "tenants.usagecounterdekad", "data_usage"),
                    _admin_page("API usage (monthly)", "tenants.usagecountermonthly", "data_usage"),
                    _admin_page(
                        "API usage (quarterly)", "tenants.usagecounterquarterly", "data_usage"
                    ),
                    _admin_page("API usage (yearly)", "tenants.usagecounteryearly", "data_usage"),
                    _admin_page("API usage not folded", "tenants.usagecounterdelta", "pending"),
                    _admin_page("Usage folds", "tenants.usagefold", "compress"),
                    _admin_page("Beat tasks", "django_celery_beat.periodictask", "schedule"),
                    _admin_page("Beat crontabs", "django_celery_beat.crontabschedule", "timer"),
                    _admin_page("Beat intervals", "django_celery_beat.intervalschedule", "timer"),
                    _admin_page("Beat clocked", "django_celery_beat.clockedschedule", "alarm"),
                    _admin_page("Beat solar", "django_celery_beat.solarschedule", "wb_sunny"),
                    _admin_page("OAuth applications", "oauth2_provider.application", "apps"),
                    _admin_page("OAuth access tokens", "oauth2_provider.accesstoken", "token"),
                    _admin_page("OAuth refresh tokens", "oauth2_provider.refreshtoken", "token"),
                    _admin_page("OAuth grants", "oauth2_provider.grant", "token"),
                    _admin_page("OAuth ID tokens", "oauth2_provider.idtoken", "token"),
                ],
            },
        ],
    },
}

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
    },
}
