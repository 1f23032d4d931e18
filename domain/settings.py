"""One typed settings object, read from the environment once and passed in."""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit


DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/hostq"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: Where `hostq dev` keeps its development HOSTQ_KEK (relative to the directory it runs in); in development,
#: other commands run there without HOSTQ_KEK use it too (hostq/cli.py).
DEV_KEK_FILE = Path(".hostq") / "dev-kek"


class SettingsError(Exception):
    """A setting is missing or malformed; the message names the variable."""


#: The most attempts a job may have in a round (HOSTQ_JOB_MAX_ATTEMPTS): more would retry for days.
MAX_ATTEMPTS = 100
#: The shortest HOSTQ_PSP_WEBHOOK_SECRET production takes: anything shorter is guessable.
MIN_WEBHOOK_SECRET = 16

#: How much longer than hostq waited a createacct may still run on WHM (HOSTQ_WHM_CREATE_SETTLE_S's default).
CREATE_OUTLASTS_S = 600.0


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """hostq's configuration (operations.md, 'Configuration'). Its repr hides the secrets (the KEK, passwords in
    URLs, the webhook secret), should it ever reach a log line or a traceback."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str = DEFAULT_REDIS_URL
    kek: bytes | None = None
    smtp_url: str = "smtp://127.0.0.1:1025"
    psp_url: str = "http://127.0.0.1:8089"
    psp_webhook_secret: str = "sandbox"
    whm_create_timeout: float = 300.0
    whm_read_timeout: float = 15.0
    job_max_attempts: int = 6
    job_backoff_min_s: float = 5.0
    job_backoff_max_s: float = 120.0
    env: str = "development"
    # Prefix of every Redis key hostq writes (broker, locks, limits), so that
    # several deployments or test runs can share one Redis.
    namespace: str = "hostq"
    # Seconds a recorded job may wait undispatched before the relay re-sends it.
    relay_grace_s: float = 5.0
    # Seconds a sent job may wait for its delivery (queued, or retrying past its due time) before the scheduler
    # sends it again: its message may be lost (a broker restarted without its data).
    resend_stalled_s: float = 600.0
    # Seconds without a worker's heartbeat before its unacknowledged messages are redelivered.
    broker_heartbeat_s: float = 30.0
    # Seconds after a createacct was sent during which WHM may still make the account; 0: the create timeout + 600.
    whm_create_settle_s: float = 0.0
    # TTL of the per-service lock; 0 means "the slowest WHM call plus a minute".
    lock_ttl_s: float = 0.0
    # Postgres connections an API process may hold for its hot paths (domain/pg.py); the ORM adds up to 15.
    api_db_pool: int = 50

    def __repr__(self) -> str:
        def shown(name: str) -> str:
            value = getattr(self, name)
            if name in ("kek", "psp_webhook_secret"):
                return "None" if value is None else "'***'"
            return repr(redacted(value)) if name.endswith("_url") else repr(value)
        return f"Settings({', '.join(f'{f}={shown(f)}' for f in self.__dataclass_fields__)})"

    @property
    def service_lock_ttl_s(self) -> float:
        """How long a service's lock lives without renewal: longer than the slowest call it covers."""
        return self.lock_ttl_s or max(self.whm_create_timeout, self.whm_read_timeout) + 60

    @property
    def create_settles_s(self) -> float:
        """How long after a createacct was sent WHM may still create its account: until then, not finding it proves
        nothing. HOSTQ_WHM_CREATE_SETTLE_S, else HOSTQ_WHM_CREATE_TIMEOUT and CREATE_OUTLASTS_S more (a createacct
        takes "tens of seconds, sometimes minutes": one that outlasted hostq's wait by 10 minutes is taken as lost)."""
        return self.whm_create_settle_s or self.whm_create_timeout + CREATE_OUTLASTS_S

    @property
    def attempt_time_limit_s(self) -> float:
        """The longest one attempt may run before Dramatiq's TimeLimit interrupts it (createacct plus the rest)."""
        return self.whm_create_timeout + 120

    @property
    def production(self) -> bool:
        return self.env == "production"

    def require_kek(self) -> bytes:
        """The key-encryption key, or a SettingsError naming HOSTQ_KEK."""
        if self.kek is None:
            raise SettingsError("HOSTQ_KEK is required (base64 of 32 random bytes); `hostq dev` makes one for development")
        return self.kek


#: Query options that carry a secret (redis-py reads `password`; libpq `sslpassword`).
_SECRET_OPTIONS = re.compile(r"(?i)(^|&)((?:ssl)?password)=[^&]*")


def redacted(url: str) -> str:
    """`url` fit for a message or a log line: its password, if any, shown as ***, in the user part or the query."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # too malformed to tell where a password would be
        return "(a malformed URL, not shown)"
    if password is not None:
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}")
    if parts.query:
        parts = parts._replace(query=_SECRET_OPTIONS.sub(r"\1\2=***", parts.query))
    return urlunsplit(parts)


#: The connection options DATABASE_URL may carry, as libpq (and asyncpg's DSN parser) name them: TLS above all.
PG_OPTIONS = frozenset({"sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "sslcrl",
                        "ssl_min_protocol_version", "ssl_max_protocol_version", "target_session_attrs", "passfile"})


#: libpq's sslmode values (asyncpg takes the same).
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _url(env: Mapping[str, str], name: str, default: str, schemes: tuple[str, ...]) -> str:
    value = env.get(name, default).strip()
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in schemes or not parts.netloc:
        raise SettingsError(f"{name} must be a URL with scheme {' or '.join(schemes)}, got {redacted(value)!r}")
    try:
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError:
        raise SettingsError(f"{name}: the port must be a number from 0 to 65535, got {redacted(value)!r}") from None
    if parts.scheme in ("redis", "rediss") and not re.fullmatch(r"/?|/\d+", parts.path):
        # redis-py would quietly use database 0 for a path that is not a number
        raise SettingsError(f"{name}: the path must be a Redis database number (/0, /1, ...), got {parts.path!r}")
    if parts.scheme.startswith("postgresql") and (unknown := set(parse_qs(parts.query)) - PG_OPTIONS):
        # every connection reads them as libpq's (domain.pg.connect); asyncpg would send any other name to the
        # server as a setting, refused there only at the first connection
        raise SettingsError(f"{name}: unsupported connection option(s) {', '.join(sorted(unknown))}: "
                            f"use {', '.join(sorted(PG_OPTIONS))}")
    if parts.scheme.startswith("postgresql") and not parts.path.strip("/"):
        # asyncpg would connect to the database named as the user (postgres), which no `db upgrade` migrated
        raise SettingsError(f"{name} must name a database (…:5432/hostq), got {redacted(value)!r}")
    if parts.scheme.startswith("postgresql"):
        modes = parse_qs(parts.query).get("sslmode", [])
        if any(mode not in SSL_MODES for mode in modes):
            raise SettingsError(f"{name}: sslmode must be one of {', '.join(SSL_MODES)}, got {', '.join(modes)}")
    return value


#: The most seconds any time setting may say: a week (Dramatiq counts a time limit in milliseconds in a C int,
#: which 25 days overflow; no wait of hostq's is meant to last longer than days).
MAX_SECONDS = 7 * 24 * 3600.0


def _number(env: Mapping[str, str], name: str, default: float, kind: type, minimum: float,
            maximum: float = MAX_SECONDS) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise SettingsError(f"{name} must be from {minimum:g} to {maximum:g}, got {raw!r}")
    return value


def _kek(env: Mapping[str, str]) -> bytes | None:
    raw = (env.get("HOSTQ_KEK") or "").strip()  # a key read from a file keeps its newline
    if not raw:
        return None
    try:
        # the standard alphabet, or the URL-safe one (`-` and `_`) some secret stores hand out
        key = base64.b64decode(raw, altchars=b"-_" if re.search(r"[-_]", raw) else None, validate=True)
    except (binascii.Error, ValueError):
        raise SettingsError("HOSTQ_KEK must be base64 of 32 bytes (e.g. `openssl rand -base64 32`), got something "
                            "that is not base64") from None
    if len(key) != 32:
        raise SettingsError(f"HOSTQ_KEK must be base64 of 32 bytes, got {len(key)} bytes")
    return key


#: A namespace prefixes every Redis key and names nothing else: a plain word, so no key of it matches another's.
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _namespace(env: Mapping[str, str]) -> str:
    """HOSTQ_NAMESPACE, refused when set but empty (an unset template variable would otherwise join the default
    deployment's queues on a shared Redis) or not a plain word."""
    value = env.get("HOSTQ_NAMESPACE", "hostq")
    if not _NAMESPACE.fullmatch(value):
        raise SettingsError("HOSTQ_NAMESPACE must be 1 to 64 letters, digits, '.', '_' or '-' (not first), "
                            f"got {value!r}")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and check every setting; raise SettingsError naming the first bad one."""
    env = os.environ if env is None else env
    mode = env.get("HOSTQ_ENV", "development")
    if mode not in ("development", "production"):
        raise SettingsError(f"HOSTQ_ENV must be 'development' or 'production', got {mode!r}")
    redis_url = _url(env, "REDIS_URL", DEFAULT_REDIS_URL, ("redis", "rediss"))
    settings = Settings(
        database_url=_url(env, "DATABASE_URL", DEFAULT_DATABASE_URL, ("postgresql+asyncpg",)),
        redis_url=redis_url,
        broker_url=_url(env, "HOSTQ_BROKER_URL", redis_url, ("redis", "rediss", "amqp", "amqps")),
        kek=_kek(env),
        smtp_url=_url(env, "HOSTQ_SMTP_URL", "smtp://127.0.0.1:1025", ("smtp", "smtps")),
        psp_url=_url(env, "HOSTQ_PSP_URL", "http://127.0.0.1:8089", ("http", "https")),
        psp_webhook_secret=env.get("HOSTQ_PSP_WEBHOOK_SECRET", "" if mode == "production" else "sandbox"),
        whm_create_timeout=_number(env, "HOSTQ_WHM_CREATE_TIMEOUT", 300.0, float, 0.1, maximum=24 * 3600.0),
        whm_read_timeout=_number(env, "HOSTQ_WHM_READ_TIMEOUT", 15.0, float, 0.1, maximum=3600.0),
        whm_create_settle_s=_number(env, "HOSTQ_WHM_CREATE_SETTLE_S", 0.0, float, 0.0),
        job_max_attempts=int(_number(env, "HOSTQ_JOB_MAX_ATTEMPTS", 6, int, 1, maximum=MAX_ATTEMPTS)),
        job_backoff_min_s=_number(env, "HOSTQ_JOB_BACKOFF_MIN_S", 5.0, float, 0.0),
        job_backoff_max_s=_number(env, "HOSTQ_JOB_BACKOFF_MAX_S", 120.0, float, 0.0),
        env=mode,
        namespace=_namespace(env),
        relay_grace_s=_number(env, "HOSTQ_RELAY_GRACE_S", 5.0, float, 0.0),
        resend_stalled_s=_number(env, "HOSTQ_RESEND_STALLED_S", 600.0, float, 1.0),
        broker_heartbeat_s=_number(env, "HOSTQ_BROKER_HEARTBEAT_S", 30.0, float, 1.0),
        lock_ttl_s=_number(env, "HOSTQ_LOCK_TTL_S", 0.0, float, 0.0),
        api_db_pool=int(_number(env, "HOSTQ_API_DB_POOL", 50, int, 1, maximum=1000)),
    )
    if settings.job_backoff_max_s < settings.job_backoff_min_s:
        raise SettingsError("HOSTQ_JOB_BACKOFF_MAX_S must be >= HOSTQ_JOB_BACKOFF_MIN_S")
    if settings.production:
        if settings.kek is None:
            raise SettingsError("HOSTQ_KEK is required when HOSTQ_ENV=production")
        secret = settings.psp_webhook_secret
        if secret.strip().lower() in ("", "sandbox") or len(secret.strip()) < MIN_WEBHOOK_SECRET:
            raise SettingsError(f"HOSTQ_PSP_WEBHOOK_SECRET must be set to a real secret (at least {MIN_WEBHOOK_SECRET} "
                                "characters, e.g. `openssl rand -hex 32`) when HOSTQ_ENV=production")
    return settings
