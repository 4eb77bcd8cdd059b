"""System checks (``realtime.checks``) and the settings object (``realtime.conf``)."""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.core.checks import Error, Warning, run_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from realtime.conf import DEFAULTS, realtime_settings
from realtime.core.policy import DefaultPolicy, PublicPolicy
from realtime.storage import retention


def realtime_messages(*, deploy: bool = False) -> list[Any]:
    """The realtime.* check messages of the current settings.

    Leaves out the live-model checks (``realtime.W1xx``, tested in test_live_models.py): the
    demo's live model would add them to every REALTIME override here.
    """
    return [
        m
        for m in run_checks(include_deployment_checks=deploy)
        if m.id.startswith("realtime.") and not m.id.startswith("realtime.W1")
    ]


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


# --- realtime.E001: the REALTIME setting ------------------------------------------------


def test_project_settings_pass_the_checks() -> None:
    assert realtime_messages() == []


def test_unknown_key_is_an_error_naming_the_valid_keys() -> None:
    with override_settings(REALTIME={"HEARTBEAT_INTERVAL": 5, "HEARTBEAT_INTERVALL": 5}):
        messages = realtime_messages()
    assert ids(messages) == ["realtime.E001"]
    error = messages[0]
    assert isinstance(error, Error)
    assert "HEARTBEAT_INTERVALL" in error.msg
    assert "Valid keys are:" in error.msg
    for key in DEFAULTS:
        assert key in error.msg.split("Valid keys are:")[1], key


@pytest.mark.parametrize("value", [0, -5, "30 days", True])
def test_bad_presence_history_retention_is_an_error(value: object) -> None:
    with override_settings(REALTIME={"PRESENCE_HISTORY_RETENTION": value}):
        messages = realtime_messages()
    assert ids(messages) == ["realtime.E001"]
    assert "PRESENCE_HISTORY_RETENTION" in messages[0].msg


@pytest.mark.parametrize(
    "path", ["realtime.policy.NoSuchPolicy", "no_such_module.Policy", "notadottedpath"]
)
def test_unimportable_policy_is_an_error(path: str) -> None:
    with override_settings(REALTIME={"POLICY": path}):
        messages = realtime_messages()
    assert ids(messages) == ["realtime.E001"]
    assert "REALTIME['POLICY']" in messages[0].msg
    assert path in messages[0].msg


@pytest.mark.parametrize(
    "rules",
    [
        "public",
        ["public:*"],
        {"x:*": "no-such-preset"},
        {"x:*": "no_such_module.check"},
        {"x:*": {"read": "anyone"}},
        {"x:*": {"subscribe": "everybody"}},
        {"x:*": 42},
    ],
    ids=repr,
)
def test_bad_rules_are_an_error(rules: Any) -> None:
    """A RULES mistake found at start-up, not as internal_error on every subscribe."""
    with override_settings(REALTIME={"RULES": rules}):
        messages = realtime_messages()
    assert ids(messages) == ["realtime.E001"]
    assert "RULES" in messages[0].msg


def test_unimportable_token_authenticator_is_an_error() -> None:
    with override_settings(REALTIME={"TOKEN_AUTHENTICATOR": "no_such_module.authenticate"}):
        messages = realtime_messages()
    assert ids(messages) == ["realtime.E001"]
    assert "TOKEN_AUTHENTICATOR" in messages[0].msg


def test_deploy_checks_report_a_bad_setting_instead_of_crashing() -> None:
    """``manage.py check --deploy`` must show E001, not a traceback from the deploy checks."""
    for realtime in ({"NOPE": 1}, {"POLICY": "realtime.policy.Nope"}):
        with override_settings(REALTIME=realtime):
            messages = realtime_messages(deploy=True)
        assert ids(messages) == ["realtime.E001"], realtime


@pytest.mark.parametrize(
    "value",
    [
        "keep everything",
        ["*"],
        {"*": 100},
        {"*": {"max_events": -1}},
        {"*": {"max_events": "10"}},
        {"*": {"max_events": 1.5}},
        {"*": {"max_events": True}},
        {"*": {"max_age": 0}},
        {"*": {"max_age": -5}},
        {"*": {"max_age": "1 day"}},
        {"*": {"max_age": True}},
        {"*": {"max_age": timedelta(0)}},
        {"*": {"max_event": 10}},
        {1: {"max_events": 10}},
    ],
    ids=repr,
)
def test_bad_retention_is_an_error(value: Any) -> None:
    with override_settings(REALTIME={"RETENTION": value}):
        messages = realtime_messages()
    assert ids(messages) == ["realtime.E001"]
    assert "RETENTION" in messages[0].msg


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"*": {}},
        {"chat:*": {"max_events": 0}, "*": {"max_events": None, "max_age": None}},
        {"*": {"max_events": 10, "max_age": 60.5}},
        {"*": {"max_age": timedelta(days=1)}},
    ],
    ids=repr,
)
def test_good_retention_passes(value: Any) -> None:
    with override_settings(REALTIME={"RETENTION": value}):
        assert realtime_messages() == []


@pytest.mark.parametrize("value", [["HEARTBEAT_INTERVAL"], "HEARTBEAT_INTERVAL=5", 5], ids=repr)
def test_realtime_setting_that_is_not_a_dict_is_an_error(value: Any) -> None:
    with override_settings(REALTIME=value):
        messages = realtime_messages()
    assert ids(messages) == ["realtime.E001"]
    assert "must be a dict" in messages[0].msg


def test_realtime_setting_none_means_defaults() -> None:
    with override_settings(REALTIME=None):
        assert realtime_messages() == []
        assert DEFAULTS["MAX_SUBSCRIPTIONS"] == realtime_settings.MAX_SUBSCRIPTIONS


# --- realtime.E002: the channel layer ---------------------------------------------------


def test_missing_channel_layers_is_an_error() -> None:
    with override_settings(CHANNEL_LAYERS={}):
        messages = realtime_messages()
    assert ids(messages) == ["realtime.E002"]
    assert "'default'" in messages[0].msg
    assert "RedisChannelLayer" in messages[0].hint


def test_missing_channel_layer_alias_is_an_error() -> None:
    realtime = {**settings.REALTIME, "CHANNEL_LAYER": "events"}
    with override_settings(REALTIME=realtime):
        messages = realtime_messages()
    assert ids(messages) == ["realtime.E002"]
    assert "'events'" in messages[0].msg
    layers = {**settings.CHANNEL_LAYERS, "events": settings.CHANNEL_LAYERS["default"]}
    with override_settings(REALTIME=realtime, CHANNEL_LAYERS=layers):
        assert realtime_messages() == []


def test_a_backplane_of_its_own_needs_no_channel_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    realtime = {**settings.REALTIME, "BACKPLANE": "nats://127.0.0.1:4222"}
    memory = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with override_settings(REALTIME=realtime, CHANNEL_LAYERS={}):
        assert realtime_messages(deploy=True) == []
    with override_settings(REALTIME=realtime, CHANNEL_LAYERS=memory):
        assert realtime_messages(deploy=True) == []  # no W001: the layer is not used
    # Without nats-py, the start-up check says how to install it.
    for name in [name for name in sys.modules if name == "nats" or name.startswith("nats.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "realtime.bus.backends.nats", raising=False)
    with override_settings(REALTIME=realtime):
        messages = realtime_messages()
    assert ids(messages) == ["realtime.E001"]
    assert "pip install 'django-realtime[nats]'" in messages[0].msg


# --- deployment checks ------------------------------------------------------------------


def test_deploy_checks_pass_with_redis_and_no_foot_guns() -> None:
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    assert realtime_messages(deploy=True) == []


def test_in_memory_layer_warns_on_deploy() -> None:
    memory = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with override_settings(CHANNEL_LAYERS=memory):
        assert realtime_messages() == []  # only a deployment concern
        messages = realtime_messages(deploy=True)
    assert ids(messages) == ["realtime.W001"]
    assert isinstance(messages[0], Warning)
    # The alias REALTIME uses is the one checked.
    layers = {**settings.CHANNEL_LAYERS, "mem": memory["default"]}
    with override_settings(
        CHANNEL_LAYERS=layers, REALTIME={**settings.REALTIME, "CHANNEL_LAYER": "mem"}
    ):
        assert ids(realtime_messages(deploy=True)) == ["realtime.W001"]


def test_conn_max_age_warns_on_deploy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Patched in place: override_settings(DATABASES=...) is not supported by Django.
    monkeypatch.setitem(settings.DATABASES["default"], "CONN_MAX_AGE", 60)
    messages = realtime_messages(deploy=True)
    assert ids(messages) == ["realtime.W002"]
    assert "DATABASES['default']" in messages[0].msg
    assert "CONN_MAX_AGE" in messages[0].hint
    # None keeps connections open forever: the worst case.
    monkeypatch.setitem(settings.DATABASES["default"], "CONN_MAX_AGE", None)
    assert ids(realtime_messages(deploy=True)) == ["realtime.W002"]
    monkeypatch.setitem(settings.DATABASES["default"], "CONN_MAX_AGE", 0)
    assert realtime_messages(deploy=True) == []


def test_any_origin_warns_on_deploy() -> None:
    with override_settings(REALTIME={"ALLOWED_ORIGINS": ["https://example.com", "*"]}):
        assert realtime_messages() == []
        assert ids(realtime_messages(deploy=True)) == ["realtime.W004"]
    with override_settings(REALTIME={"ALLOWED_ORIGINS": ["https://example.com"]}):
        assert realtime_messages(deploy=True) == []


def test_public_policy_warns_on_deploy() -> None:
    with override_settings(REALTIME={"POLICY": "realtime.policy.PublicPolicy"}):
        assert realtime_messages() == []
        assert ids(realtime_messages(deploy=True)) == ["realtime.W005"]


def test_rules_making_everything_public_warn_on_deploy() -> None:
    with override_settings(REALTIME={"RULES": {"chat:*": "private", "*": "public"}}):
        assert realtime_messages() == []
        assert ids(realtime_messages(deploy=True)) == ["realtime.W006"]
    with override_settings(REALTIME={"RULES": {"public:*": "public", "*": "private"}}):
        assert realtime_messages(deploy=True) == []


def test_gzip_middleware_warns_on_deploy() -> None:
    middleware = ["django.middleware.gzip.GZipMiddleware", *settings.MIDDLEWARE]
    with override_settings(MIDDLEWARE=middleware):
        assert realtime_messages() == []
        messages = realtime_messages(deploy=True)
    assert ids(messages) == ["realtime.W003"]
    assert "GZipMiddleware" in messages[0].msg


# --- realtime.conf ----------------------------------------------------------------------


def test_settings_merge_defaults_and_import_the_policy() -> None:
    assert settings.REALTIME["HEARTBEAT_INTERVAL"] == realtime_settings.HEARTBEAT_INTERVAL
    assert realtime_settings.MAX_SUBSCRIPTIONS == 100
    assert realtime_settings.SSE_RETRY == 2000
    assert realtime_settings.POLICY is DefaultPolicy
    with pytest.raises(AttributeError, match="Invalid realtime setting: 'NOPE'"):
        realtime_settings.NOPE  # noqa: B018


def test_settings_reload_on_override_settings() -> None:
    before = realtime_settings.HEARTBEAT_INTERVAL
    with override_settings(
        REALTIME={"HEARTBEAT_INTERVAL": 3, "POLICY": "realtime.policy.PublicPolicy"}
    ):
        assert realtime_settings.HEARTBEAT_INTERVAL == 3
        assert realtime_settings.POLICY is PublicPolicy
        assert DEFAULTS["HEARTBEAT_TIMEOUT"] == realtime_settings.HEARTBEAT_TIMEOUT
    assert before == realtime_settings.HEARTBEAT_INTERVAL
    assert realtime_settings.POLICY is DefaultPolicy


def test_settings_fixture_reloads_too(settings: Any) -> None:
    settings.REALTIME = {"MAX_SUBSCRIPTIONS": 7}
    assert realtime_settings.MAX_SUBSCRIPTIONS == 7
    settings.REALTIME = {"MAX_SUBSCRIPTIONS": 8}
    assert realtime_settings.MAX_SUBSCRIPTIONS == 8


def test_retention_rules_reload_on_override_settings() -> None:
    assert retention.rule_for("chat:1").max_events == 10_000
    with override_settings(REALTIME={"RETENTION": {"chat:*": {"max_events": 5}}}):
        assert retention.rule_for("chat:1").max_events == 5
        assert retention.rule_for("other") == retention.KEEP_ALL
    assert retention.rule_for("chat:1").max_events == 10_000


def test_unknown_key_is_rejected() -> None:
    with override_settings(REALTIME={"MAX_SUBSCRIPTION": 5}):
        with pytest.raises(ImproperlyConfigured) as info:
            realtime_settings.MAX_SUBSCRIPTIONS  # noqa: B018
        message = str(info.value)
        assert "Unknown key(s) in settings.REALTIME: MAX_SUBSCRIPTION." in message
        assert "MAX_SUBSCRIPTIONS" in message
    # Valid again once the override is gone.
    assert realtime_settings.MAX_SUBSCRIPTIONS == 100


def test_non_dict_setting_is_rejected() -> None:
    with (
        override_settings(REALTIME=["HEARTBEAT_INTERVAL"]),
        pytest.raises(ImproperlyConfigured, match="must be a dict"),
    ):
        realtime_settings.HEARTBEAT_INTERVAL  # noqa: B018


def test_bad_policy_path_is_rejected_on_use() -> None:
    with override_settings(REALTIME={"POLICY": "realtime.policy.Nope"}):
        with pytest.raises(ImproperlyConfigured, match=r"REALTIME\['POLICY'\]"):
            realtime_settings.POLICY  # noqa: B018
        # Other settings are still readable.
        assert DEFAULTS["MAX_FRAME_SIZE"] == realtime_settings.MAX_FRAME_SIZE


def test_sqlite_without_wal_and_immediate_transactions_warns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = settings.DATABASES["default"]
    if not db["ENGINE"].endswith("sqlite3"):
        # The same check on a PostgreSQL run: a second, SQLite, database is what it reads.
        monkeypatch.setitem(settings.DATABASES, "extra", {"ENGINE": "django.db.backends.sqlite3"})
        alias, options = "extra", {}
    else:
        alias, options = "default", dict(db["OPTIONS"])
        assert realtime_messages() == []  # the project's settings are what the hint says
    target = settings.DATABASES[alias]
    monkeypatch.setitem(target, "OPTIONS", {**options, "init_command": ""})
    messages = realtime_messages()
    assert ids(messages) == ["realtime.W010"] and f"DATABASES[{alias!r}]" in messages[0].msg
    monkeypatch.setitem(
        target, "OPTIONS", {"init_command": "PRAGMA journal_mode = WAL;", "timeout": 20}
    )
    assert ids(realtime_messages()) == ["realtime.W010"]  # deferred transactions
    monkeypatch.setitem(
        target,
        "OPTIONS",
        {"init_command": "PRAGMA journal_mode=wal", "transaction_mode": "IMMEDIATE"},
    )
    assert realtime_messages() == []


@pytest.mark.parametrize(
    ("key", "value", "wanted"),
    [
        ("SLOW_CONSUMERS", {"*": "conflat"}, "one of disconnect, skip, conflate"),
        ("SLOW_CONSUMERS", ["*"], "a dict of stream pattern"),
        ("OUTBOX_WINDOW", {"messages": 100}, '{"messages": <number>, "bytes": <number>}'),
        ("OUTBOX_WINDOW", {"messages": 100, "bytes": 0}, "each at least 1"),
        ("RATE_LIMIT", {"rate": "fast", "burst": 10}, '{"rate": <number>, "burst": <number>}'),
        ("RECONCILE_INTERVAL", 0, "a positive number"),
        ("HEARTBEAT_INTERVAL", "15", "a positive number"),
        ("MAX_SUBSCRIPTIONS", True, "a positive whole number"),
        ("MAX_CONNECTIONS_PER_IP", -1, "a positive whole number or None"),
        ("AUTH_REQUIRED", "yes", "True or False"),
        ("PRESENCE_COUNTS_ONLY", "chat:*", "a list of stream patterns"),
        ("DRAIN_TIMEOUT", 0, "a positive number"),
        ("DRAIN_SPREAD", -1, "a positive number"),
    ],
    ids=repr,
)
def test_a_wrong_value_is_an_error_saying_what_the_key_must_be(key, value, wanted) -> None:
    with override_settings(REALTIME={key: value}):
        messages = realtime_messages()
    assert ids(messages) == ["realtime.E001"]
    assert f"REALTIME[{key!r}] must be" in messages[0].msg and wanted in messages[0].msg


@pytest.mark.parametrize(
    "value", [{"*": "skip"}, {"a:*": "conflate", "*": "disconnect"}, {}], ids=repr
)
def test_valid_slow_consumer_policies_pass(value: object) -> None:
    with override_settings(REALTIME={"SLOW_CONSUMERS": value, "PRESENCE_GRACE": 0}):
        assert realtime_messages() == []


def test_a_drain_may_send_clients_back_at_once() -> None:
    with override_settings(REALTIME={"DRAIN_SPREAD": 0, "DRAIN_TIMEOUT": 0.5}):
        assert realtime_messages() == []


def test_every_setting_is_typed_and_every_type_is_a_setting() -> None:
    from realtime.conf import RealtimeSettings

    assert set(RealtimeSettings.__annotations__) == set(DEFAULTS)


@pytest.mark.parametrize("key", ["MAX_EVENT_SIZE", "REPLAY_BATCH_SIZE", "SSE_RETRY"])
def test_sizes_and_counts_must_be_whole_numbers(key: str) -> None:
    with override_settings(REALTIME={key: 1000.5}):
        messages = realtime_messages()
    assert ids(messages) == ["realtime.E001"]
    assert "a positive whole number" in messages[0].msg


def test_a_wrong_value_names_its_section_of_the_docs() -> None:
    with override_settings(REALTIME={"SLOW_CONSUMERS": {"*": "conflat"}}):
        (error,) = realtime_messages()
    assert error.hint == "See SLOW_CONSUMERS in docs/settings.md."
