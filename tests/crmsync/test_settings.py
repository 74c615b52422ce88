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
