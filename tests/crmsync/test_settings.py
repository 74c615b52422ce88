from __future__ import annotations

from pathlib import Path

import pytest

from crmsync.settings import DEFAULT_KEAP_API_URL, ConfigurationError, Settings


def test_nothing_configured_means_the_bundled_sandboxes() -> None:
    settings = Settings.from_env({})
    assert settings.sandbox_mode
    assert settings.keap_api_url == DEFAULT_KEAP_API_URL
    assert settings.db_path == Path("data/crmsync.duckdb")
    settings.validate()


def test_a_configured_pair_is_validated_and_secrets_stay_out_of_repr() -> None:
    env = {
        "KEAP_API_KEY": "KeapAK-secret-value",
        "CUSTOMCRM_API_URL": "https://crm.example/api/v1/",
        "CUSTOMCRM_API_TOKEN": "tok-secret",
        "CRMSYNC_DB": "/var/lib/crmsync/sync.duckdb",
    }
    settings = Settings.from_env(env)
    assert not settings.sandbox_mode
    settings.validate()
    assert settings.customcrm_api_url == "https://crm.example/api/v1"
    assert settings.state_dir == Path("/var/lib/crmsync/sync.state")
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KEAP_API_KEY": "k"}, "CUSTOMCRM_API_URL"),
        ({"CUSTOMCRM_API_URL": "u", "CUSTOMCRM_API_TOKEN": "t"}, "Keap is not configured"),
        ({"KEAP_API_URL": "u", "CUSTOMCRM_API_URL": "u", "CUSTOMCRM_API_TOKEN": "t"}, "KEAP_API_KEY"),
        ({"KEAP_REFRESH_TOKEN": "r", "CUSTOMCRM_API_URL": "u", "CUSTOMCRM_API_TOKEN": "t"}, "KEAP_CLIENT_ID"),
    ],
)
def test_half_a_configuration_is_refused_naming_what_is_missing(env: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(env).validate()


def test_dotenv_fills_what_the_environment_leaves_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("CRMSYNC_DB=from-dotenv.duckdb\nCUSTOMCRM_API_TOKEN=dotenv-token\n")
    monkeypatch.setenv("CRMSYNC_DB", "from-env.duckdb")
    monkeypatch.delenv("CUSTOMCRM_API_TOKEN", raising=False)
    settings = Settings.from_env(dotenv=dotenv)
    assert settings.db_path == Path("from-env.duckdb")
    assert settings.customcrm_api_token == "dotenv-token"


CONFIGURED = {"KEAP_API_KEY": "KeapAK-secret", "CUSTOMCRM_API_URL": "https://crm.example/api/v1",
              "CUSTOMCRM_API_TOKEN": "tok-secret"}  # fmt: skip


@pytest.mark.parametrize("name", ["KEAP_API_URL", "KEAP_TOKEN_URL", "CUSTOMCRM_API_URL"])
def test_plain_http_beyond_loopback_is_refused_naming_the_variable(name: str) -> None:
    settings = Settings.from_env({**CONFIGURED, name: "http://crm.example.com/api"})
    with pytest.raises(ConfigurationError) as caught:
        settings.validate()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{name} uses plain http://")
    assert "use https://" in message and "CRMSYNC_ALLOW_INSECURE_HTTP=1" in message
    assert settings.insecure_endpoints() == [name]


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8765/crm/rest/v2", "http://127.3.4.5/x", "http://localhost:9/x", "http://[::1]:8/x",
     "https://api.infusionsoft.com/crm/rest/v2"],
)  # fmt: skip
def test_https_and_loopback_http_are_accepted(url: str) -> None:
    settings = Settings.from_env({**CONFIGURED, "KEAP_API_URL": url, "KEAP_TOKEN_URL": url})
    settings.validate()
    assert settings.insecure_endpoints() == [] and settings.insecure_http_warning() is None


@pytest.mark.parametrize("url", ["http://localhost.evil.example/x", "http://0.0.0.0/x", "http://10.0.0.1/x"])
def test_look_alikes_of_loopback_are_not_loopback(url: str) -> None:
    with pytest.raises(ConfigurationError, match="CUSTOMCRM_API_URL uses plain http://"):
        Settings.from_env({**CONFIGURED, "CUSTOMCRM_API_URL": url}).validate()


def test_a_url_that_is_not_https_at_all_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"KEAP_API_URL is not an https:// URL: set it"):
        Settings.from_env({**CONFIGURED, "KEAP_API_URL": "ftp://keap.example/x"}).validate()


def test_insecure_http_can_be_allowed_and_is_then_warned_about() -> None:
    env = {**CONFIGURED, "CUSTOMCRM_API_URL": "http://crm.internal/api/v1", "KEAP_TOKEN_URL": "http://t.internal/token",
           "CRMSYNC_ALLOW_INSECURE_HTTP": "1"}  # fmt: skip
    settings = Settings.from_env(env)
    settings.validate()
    assert settings.insecure_http_warning() == (
        "warning: KEAP_TOKEN_URL, CUSTOMCRM_API_URL use plain http:// (CRMSYNC_ALLOW_INSECURE_HTTP=1): "
        "credentials and customer data travel unencrypted"
    )


def test_credentials_in_urls_stay_out_of_the_repr() -> None:
    env = {**CONFIGURED, "KEAP_API_URL": "https://keapuser:keappass@keap.example/crm/rest/v2",
           "CUSTOMCRM_API_URL": "https://crmuser:crmpass@crm.example/api/v1"}  # fmt: skip
    shown = repr(Settings.from_env(env))
    assert "https://***@keap.example/crm/rest/v2" in shown and "https://***@crm.example/api/v1" in shown
    for secret in ("keapuser", "keappass", "crmuser", "crmpass", "KeapAK-secret", "tok-secret"):
        assert secret not in shown


@pytest.mark.parametrize("value", ["thirty", "-1", "1.5"])
def test_the_retention_is_a_whole_number_of_days(value: str) -> None:
    with pytest.raises(ConfigurationError, match="CRMSYNC_RETENTION_DAYS must be a whole number of days"):
        Settings.from_env({"CRMSYNC_RETENTION_DAYS": value})
    assert Settings.from_env({}).retention_days == 30
    assert Settings.from_env({"CRMSYNC_RETENTION_DAYS": "7"}).retention_days == 7


def test_the_syncing_line_and_the_insecure_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from crmsync.demo import open_endpoints as endpoints

    env = {**CONFIGURED, "KEAP_API_URL": "https://keapuser:keappass@keap.example/crm/rest/v2",
           "CUSTOMCRM_API_URL": "http://crmuser:crmpass@crm.internal/api/v1", "CRMSYNC_ALLOW_INSECURE_HTTP": "1",
           "CRMSYNC_DB": str(tmp_path / "c.duckdb")}  # fmt: skip
    with endpoints(Settings.from_env(env)) as found:
        assert found.description == (
            "Keap at https://***@keap.example/crm/rest/v2, Customcrm at http://***@crm.internal/api/v1"
        )
    assert capsys.readouterr().err == (
        "crmsync: warning: CUSTOMCRM_API_URL uses plain http:// (CRMSYNC_ALLOW_INSECURE_HTTP=1): "
        "credentials and customer data travel unencrypted\n"
    )


def test_the_keap_quota_reserve_is_a_whole_number_of_requests() -> None:
    assert Settings.from_env({}).keap_quota_reserve == 100
    assert Settings.from_env({"CRMSYNC_KEAP_QUOTA_RESERVE": "0"}).keap_quota_reserve == 0
    for bad in ("-1", "2.5", "many"):
        with pytest.raises(
            ConfigurationError, match="CRMSYNC_KEAP_QUOTA_RESERVE must be a whole number of requests"
        ):
            Settings.from_env({"CRMSYNC_KEAP_QUOTA_RESERVE": bad})


def test_the_warehouse_is_a_postgresql_url_its_password_never_shown() -> None:
    url = "postgresql://crmsync:s3cret-pw@127.0.0.1:5432/analytics"
    settings = Settings.from_env({"CRMSYNC_WAREHOUSE": url}, dotenv="/nonexistent")
    assert settings.warehouse == url
    assert "s3cret-pw" not in repr(settings) and "***@127.0.0.1" in repr(settings)
    assert Settings.from_env({}, dotenv="/nonexistent").warehouse is None
    for wrong, says in [
        ("mysql://u:s3cret-pw@127.0.0.1/db", "must be a postgresql:// URL"),
        ("postgresql://u:s3cret-pw@127.0.0.1", "needs a host and a database"),
        ("postgresql://u:s3cret-pw@127.0.0.1:port/db", "is not a URL"),
    ]:
        with pytest.raises(ConfigurationError, match=says) as refused:
            Settings.from_env({"CRMSYNC_WAREHOUSE": wrong}, dotenv="/nonexistent")
        assert "s3cret-pw" not in str(refused.value)


def test_a_warehouse_beyond_loopback_needs_tls_unless_plain_connections_are_allowed() -> None:
    remote = "postgresql://crmsync:s3cret-pw@db.example.internal:5432/analytics"
    with pytest.raises(ConfigurationError, match=r"without TLS.*sslmode=verify-full") as refused:
        Settings.from_env({"CRMSYNC_WAREHOUSE": remote}, dotenv="/nonexistent")
    assert "s3cret-pw" not in str(refused.value)
    with pytest.raises(ConfigurationError, match="without TLS"):
        Settings.from_env({"CRMSYNC_WAREHOUSE": remote + "?sslmode=prefer"}, dotenv="/nonexistent")
    for fine in (remote + "?sslmode=require", remote + "?sslmode=verify-full"):
        assert Settings.from_env({"CRMSYNC_WAREHOUSE": fine}, dotenv="/nonexistent").warehouse == fine
    allowed = Settings.from_env({"CRMSYNC_WAREHOUSE": remote, "CRMSYNC_ALLOW_INSECURE_HTTP": "1"},
                                dotenv="/nonexistent")  # fmt: skip
    assert allowed.warehouse == remote
