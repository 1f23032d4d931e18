"""Settings from the environment (operations.md, 'Configuration')."""

from __future__ import annotations

import base64

import pytest

from domain.settings import SettingsError, load_settings

KEK = base64.b64encode(bytes(range(32))).decode()


def test_defaults_match_operations_md():
    s = load_settings({})
    assert s.database_url == "postgresql+asyncpg://postgres@127.0.0.1:5432/hostq"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert s.kek is None
    assert s.smtp_url == "smtp://127.0.0.1:1025"
    assert s.psp_url == "http://127.0.0.1:8089"
    assert s.psp_webhook_secret == "sandbox"
    assert (s.whm_create_timeout, s.whm_read_timeout) == (300, 15)
    assert s.job_max_attempts == 6 and isinstance(s.job_max_attempts, int)
    assert (s.job_backoff_min_s, s.job_backoff_max_s) == (5, 120)
    assert s.env == "development" and not s.production


def test_broker_url_defaults_to_redis_url():
    s = load_settings({"REDIS_URL": "redis://cache.internal:6380/2"})
    assert s.broker_url == "redis://cache.internal:6380/2"
    s = load_settings({"REDIS_URL": "redis://cache.internal:6380/2", "HOSTQ_BROKER_URL": "amqp://rabbit:5672"})
    assert s.broker_url == "amqp://rabbit:5672"


def test_values_are_read():
    s = load_settings({"HOSTQ_JOB_MAX_ATTEMPTS": "3", "HOSTQ_WHM_READ_TIMEOUT": "2.5", "HOSTQ_KEK": KEK,
                       "HOSTQ_JOB_BACKOFF_MIN_S": "", "DATABASE_URL": "postgresql+asyncpg://u@db:5432/x"})
    assert s.job_max_attempts == 3 and s.whm_read_timeout == 2.5 and s.kek == bytes(range(32))
    assert s.job_backoff_min_s == 5.0
    assert s.database_url == "postgresql+asyncpg://u@db:5432/x"
    assert s.require_kek() == bytes(range(32))
    assert load_settings({}).api_db_pool == 50 and load_settings({"HOSTQ_API_DB_POOL": "12"}).api_db_pool == 12


def test_a_createacct_settles_ten_minutes_after_its_timeout_unless_told():
    assert load_settings({"HOSTQ_WHM_CREATE_TIMEOUT": "30"}).create_settles_s == 630
    assert load_settings({"HOSTQ_WHM_CREATE_TIMEOUT": "30", "HOSTQ_WHM_CREATE_SETTLE_S": "900"}).create_settles_s == 900


def test_require_kek_names_the_variable():
    with pytest.raises(SettingsError, match="HOSTQ_KEK"):
        load_settings({}).require_kek()


@pytest.mark.parametrize("env, variable", [
    ({"HOSTQ_JOB_MAX_ATTEMPTS": "abc"}, "HOSTQ_JOB_MAX_ATTEMPTS"),
    ({"HOSTQ_JOB_MAX_ATTEMPTS": "2.5"}, "HOSTQ_JOB_MAX_ATTEMPTS"),
    ({"HOSTQ_JOB_MAX_ATTEMPTS": "0"}, "HOSTQ_JOB_MAX_ATTEMPTS"),
    ({"HOSTQ_WHM_CREATE_TIMEOUT": "fast"}, "HOSTQ_WHM_CREATE_TIMEOUT"),
    ({"HOSTQ_WHM_READ_TIMEOUT": "0"}, "HOSTQ_WHM_READ_TIMEOUT"),
    ({"HOSTQ_WHM_CREATE_SETTLE_S": "-1"}, "HOSTQ_WHM_CREATE_SETTLE_S"),
    ({"HOSTQ_JOB_BACKOFF_MIN_S": "-1"}, "HOSTQ_JOB_BACKOFF_MIN_S"),
    ({"HOSTQ_JOB_BACKOFF_MIN_S": "10", "HOSTQ_JOB_BACKOFF_MAX_S": "5"}, "HOSTQ_JOB_BACKOFF_MAX_S"),
    ({"HOSTQ_KEK": "not base64!!"}, "HOSTQ_KEK"),
    ({"HOSTQ_KEK": base64.b64encode(b"x" * 16).decode()}, "HOSTQ_KEK"),
    ({"HOSTQ_KEK": base64.b64encode(b"x" * 33).decode()}, "HOSTQ_KEK"),
    ({"DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/hostq"}, "DATABASE_URL"),
    ({"DATABASE_URL": "mysql://root@db/hostq"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql+asyncpg:///nohost"}, "DATABASE_URL"),
    ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL"),
    ({"HOSTQ_BROKER_URL": "kafka://k:9092"}, "HOSTQ_BROKER_URL"),
    ({"HOSTQ_SMTP_URL": "http://mail"}, "HOSTQ_SMTP_URL"),
    ({"HOSTQ_PSP_URL": "ftp://psp"}, "HOSTQ_PSP_URL"),
    ({"HOSTQ_ENV": "staging"}, "HOSTQ_ENV"),
    ({"HOSTQ_ENV": ""}, "HOSTQ_ENV"),
    ({"HOSTQ_API_DB_POOL": "0"}, "HOSTQ_API_DB_POOL"),
    ({"HOSTQ_API_DB_POOL": "many"}, "HOSTQ_API_DB_POOL"),
    ({"REDIS_URL": "redis://127.0.0.1:port/0"}, "REDIS_URL"),
    ({"REDIS_URL": "redis://[::1/0"}, "REDIS_URL"),
    ({"HOSTQ_NAMESPACE": ""}, "HOSTQ_NAMESPACE"),  # set but empty: not quietly the default deployment's
    ({"HOSTQ_NAMESPACE": "a b*"}, "HOSTQ_NAMESPACE"),
    ({"HOSTQ_NAMESPACE": "acme:eu"}, "HOSTQ_NAMESPACE"),
])
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert str(info.value).startswith(variable)


@pytest.mark.parametrize(("variable", "url", "shown"), [
    ("DATABASE_URL", "mysql://root:s3cretpw@127.0.0.1/x", "'mysql://root:***@127.0.0.1/x'"),
    ("HOSTQ_BROKER_URL", "kafka://:s3cretpw@k:9092", "'kafka://:***@k:9092'"),
    ("REDIS_URL", "redis://user:s3cretpw@[::1/0", "'(a malformed URL, not shown)'"),
])
def test_a_refused_url_is_shown_without_its_password(variable, url, shown):
    with pytest.raises(SettingsError) as info:
        load_settings({variable: url})
    assert "s3cretpw" not in str(info.value)
    assert str(info.value).endswith(f"got {shown}")


@pytest.mark.parametrize("variable", ["HOSTQ_WHM_READ_TIMEOUT", "HOSTQ_JOB_BACKOFF_MIN_S"])
def test_nan_is_refused(variable):
    with pytest.raises(SettingsError, match=variable):
        load_settings({variable: "nan"})


def test_production_without_kek_names_hostq_kek():
    with pytest.raises(SettingsError, match="HOSTQ_KEK"):
        load_settings({"HOSTQ_ENV": "production", "HOSTQ_PSP_WEBHOOK_SECRET": "real-secret-0123456789"})


@pytest.mark.parametrize("extra", [{}, {"HOSTQ_PSP_WEBHOOK_SECRET": "sandbox"}, {"HOSTQ_PSP_WEBHOOK_SECRET": ""},
                                   {"HOSTQ_PSP_WEBHOOK_SECRET": "   "}, {"HOSTQ_PSP_WEBHOOK_SECRET": "Sandbox"},
                                   {"HOSTQ_PSP_WEBHOOK_SECRET": "x"}, {"HOSTQ_PSP_WEBHOOK_SECRET": "fifteen-chars-x"}])
def test_production_with_default_webhook_secret_raises(extra):
    with pytest.raises(SettingsError, match="HOSTQ_PSP_WEBHOOK_SECRET"):
        load_settings({"HOSTQ_ENV": "production", "HOSTQ_KEK": KEK, **extra})


def test_production_with_real_settings_loads():
    s = load_settings({"HOSTQ_ENV": "production", "HOSTQ_KEK": KEK, "HOSTQ_PSP_WEBHOOK_SECRET": "real-secret-0123456789"})
    assert s.production and s.psp_webhook_secret == "real-secret-0123456789"


def test_database_url_takes_libpq_connection_options_and_nothing_else():
    url = "postgresql+asyncpg://hostq:pw@db.internal:5432/hostq"
    tls = f"{url}?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem"
    assert load_settings({"DATABASE_URL": tls}).database_url == tls
    with pytest.raises(SettingsError, match="unsupported connection option"):
        load_settings({"DATABASE_URL": f"{url}?ssl=require"})  # asyncpg.connect's argument, not a libpq option
    with pytest.raises(SettingsError, match="DATABASE_URL: sslmode must be one of disable, .*, got bogus"):
        load_settings({"DATABASE_URL": f"{url}?sslmode=bogus"})  # asyncpg would refuse it only at connect


@pytest.mark.parametrize("port", ["abc", "99999"])
def test_a_url_whose_port_is_not_one_is_named_as_such(port):
    with pytest.raises(SettingsError, match=f"DATABASE_URL: the port must be a number from 0 to 65535, got .*:{port}/"):
        load_settings({"DATABASE_URL": f"postgresql+asyncpg://hostq@db:{port}/hostq"})


def test_the_repr_shows_no_secret():
    s = load_settings({"HOSTQ_KEK": KEK,
                       "DATABASE_URL": "postgresql+asyncpg://hostq:pg-pass@db:5432/hostq?sslpassword=key-pass",
                       "REDIS_URL": "redis://:redis-pass@cache:6379/0", "HOSTQ_PSP_WEBHOOK_SECRET": "whsec-real-0123456789",
                       "HOSTQ_BROKER_URL": "redis://cache:6379/1?password=broker-pass"})
    shown = repr(s)
    for secret in ("pg-pass", "key-pass", "redis-pass", "broker-pass", "whsec-real", KEK, repr(s.kek)):
        assert secret not in shown, secret
    assert "db:5432" in shown and "job_max_attempts=6" in shown and "kek='***'" in shown


def test_a_namespace_is_a_plain_word():
    assert load_settings({}).namespace == "hostq"
    assert load_settings({"HOSTQ_NAMESPACE": "acme-eu.2_b"}).namespace == "acme-eu.2_b"


def test_a_database_url_must_name_its_database():
    """Without one asyncpg connects to the database named as the user, which `hostq db upgrade` never migrated."""
    for url in ("postgresql+asyncpg://postgres@127.0.0.1:5432", "postgresql+asyncpg://postgres@127.0.0.1:5432/"):
        with pytest.raises(SettingsError, match="DATABASE_URL must name a database"):
            load_settings({"DATABASE_URL": url})


@pytest.mark.parametrize(("variable", "too_much"), [("HOSTQ_JOB_MAX_ATTEMPTS", "1000000000000"),
                                                    ("HOSTQ_WHM_CREATE_TIMEOUT", "1e300"),
                                                    ("HOSTQ_WHM_READ_TIMEOUT", "86400"),
                                                    ("HOSTQ_JOB_BACKOFF_MAX_S", "99999999"),
                                                    ("HOSTQ_API_DB_POOL", "100000")])
def test_a_value_past_its_sane_maximum_is_refused_at_start(variable, too_much):
    """Accepted, each failed later: every order 400 (an attempts count past Postgres's integer), a worker's
    traceback (a time limit past a C int)."""
    with pytest.raises(SettingsError, match=f"{variable} must be from .* to .*, got '{too_much}'"):
        load_settings({variable: too_much})


def test_a_kek_read_from_a_file_or_in_the_url_safe_alphabet_is_taken():
    key = bytes(range(200, 232))
    for raw in (base64.b64encode(key).decode() + "\n", base64.urlsafe_b64encode(key).decode()):
        assert load_settings({"HOSTQ_KEK": raw}).kek == key, raw
