"""The tenants file: each tenant's settings come from its own entry alone, secrets by
reference only, and a file that gets something wrong is one line naming the tenant and
the key (crmsync.tenants)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.errors import AuthError, RunDeadline
from crmsync.failures import failure_line
from crmsync.settings import ConfigurationError, Settings
from crmsync.tenants import apply, load

TWO = """
[tenants.acme]
keap_api_key = { env = "ACME_KEAP_KEY" }
customcrm_api_url = "https://crm.acme.example/api/v1"
customcrm_api_token = { file = "secrets/acme_crm" }
[tenants.acme.options]
conflict_policy = "keap"
vars = { create_in_keap = true }
retention_days = 7

[tenants.beta]
keap_refresh_token = { env = "BETA_REFRESH" }
keap_client_id = "beta-client"
keap_client_secret = { env = "BETA_CLIENT_SECRET" }
customcrm_api_url = "https://crm.beta.example/api/v1"
customcrm_api_token = { env = "BETA_CRM_TOKEN" }
state = "/srv/beta/state.duckdb"
"""

# what the operator's own process and `.env` hold: none of it may reach a tenant
PROCESS = {
    "KEAP_API_KEY": "process-keap-key",
    "KEAP_API_URL": "https://keap.process.example/crm/rest/v2",
    "CUSTOMCRM_API_URL": "https://crm.process.example/api/v1",
    "CUSTOMCRM_API_TOKEN": "process-crm-token",
    "CRMSYNC_DB": "/srv/process.duckdb",
    "CRMSYNC_WAIT_SECONDS": "9",  # an option no tenant sets: the operator's
}
DOTENV = "KEAP_ACCESS_TOKEN=dotenv-access\nKEAP_CLIENT_SECRET=dotenv-secret\nCRMSYNC_SANDBOX_DIR=/tmp/x\n"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "tenants.toml").write_text(TWO)
    (tmp_path / "tenants.toml").chmod(0o600)  # whatever this machine's umask
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "acme_crm").write_text("acme-crm-token\n")
    (tmp_path / ".env").write_text(DOTENV)
    monkeypatch.chdir(tmp_path)
    environ = {**os.environ, **PROCESS, "CRMSYNC_TENANTS": str(tmp_path / "tenants.toml"),
               "ACME_KEAP_KEY": "acme-keap-key", "BETA_REFRESH": "beta-refresh",
               "BETA_CLIENT_SECRET": "beta-secret", "BETA_CRM_TOKEN": "beta-crm-token"}  # fmt: skip
    monkeypatch.setattr(os, "environ", environ)
    return tmp_path


def test_each_tenant_gets_its_own_settings_and_nothing_of_the_process_or_dotenv(folder: Path) -> None:
    apply("acme")
    acme = Settings.from_env()
    assert (acme.keap_api_key, acme.customcrm_api_token) == ("acme-keap-key", "acme-crm-token")
    assert acme.customcrm_api_url == "https://crm.acme.example/api/v1"
    assert acme.keap_api_url == "https://api.infusionsoft.com/crm/rest/v2"  # Keap's, not the process's
    assert acme.keap_access_token is None and acme.keap_client_secret is None  # `.env` filled nothing in
    assert acme.sandbox_data is None
    assert acme.db_path == folder / "data" / "tenants" / "acme.duckdb"  # beside the tenants file
    assert (acme.retention_days, acme.wait_s, acme.tenant) == (7, 9.0, "acme")
    assert os.environ["CRMSYNC_CONFLICT_POLICY"] == "keap"  # read by the sync's --conflict-policy
    assert os.environ["CRMSYNC_VARS"] == '{"create_in_keap": true}'
    acme.validate()

    apply("beta")  # a second tenant in the same process: nothing of the first stays
    beta = Settings.from_env()
    assert beta.keap_api_key is None and beta.customcrm_api_token == "beta-crm-token"
    assert (beta.keap_refresh_token, beta.keap_client_id, beta.keap_client_secret) == (
        "beta-refresh", "beta-client", "beta-secret")  # fmt: skip
    assert beta.db_path == Path("/srv/beta/state.duckdb")
    beta.validate()


def test_commands_that_only_read_the_state_need_no_secret(folder: Path) -> None:
    del os.environ["ACME_KEAP_KEY"]
    apply("acme", secrets=False)
    settings = Settings.from_env()
    assert settings.keap_api_key is None and settings.customcrm_api_token is None
    assert settings.db_path == folder / "data" / "tenants" / "acme.duckdb"
    with pytest.raises(ConfigurationError, match=r"tenants\.toml: tenant 'acme', keap_api_key: the environment "
                                                 r"variable ACME_KEAP_KEY is not set"):  # fmt: skip
        apply("acme")


def test_a_problem_of_a_tenants_settings_names_the_tenant(folder: Path) -> None:
    text = TWO.replace('"https://crm.acme.example/api/v1"', '"http://crm.acme.example/api/v1"')
    (folder / "tenants.toml").write_text(text)
    apply("acme")
    with pytest.raises(ConfigurationError, match=r"^tenant 'acme': CUSTOMCRM_API_URL uses plain http://"):
        Settings.from_env().validate()
    os.environ["CRMSYNC_RETENTION_DAYS"] = "soon"
    (folder / "tenants.toml").write_text(TWO.replace("retention_days = 7\n", ""))
    apply("acme")
    with pytest.raises(ConfigurationError, match=r"^tenant 'acme': CRMSYNC_RETENTION_DAYS must be a whole"):
        Settings.from_env()


BAD = [
    ('keap_api_key = { env = "ACME_KEAP_KEY" }', 'keap_api_key = "kp-123-the-key"',
     "tenant 'acme', keap_api_key: a secret is never written in the tenants file"),
    ('keap_api_key = { env = "ACME_KEAP_KEY" }', 'keap_api_key = { value = "kp-123-the-key" }',
     "tenant 'acme', keap_api_key: must be { env = \"VARIABLE\" } or { file = \"path\" }"),
    ('keap_api_key = { env = "ACME_KEAP_KEY" }', 'keap_api_kye = { env = "ACME_KEAP_KEY" }',
     "tenant 'acme': unknown key 'keap_api_kye'"),
    ('keap_api_key = { env = "ACME_KEAP_KEY" }', "",
     "tenant 'acme', keap_api_key: a tenant needs its Keap credentials"),
    ('customcrm_api_token = { file = "secrets/acme_crm" }', "",
     "tenant 'acme', customcrm_api_url: a tenant needs its Customcrm address and token"),
    ('customcrm_api_token = { file = "secrets/acme_crm" }', 'customcrm_api_token = { file = "secrets/nothing" }',
     "tenant 'acme', customcrm_api_token: cannot read"),
    ('"https://crm.acme.example/api/v1"', '"https://ops:kp-123-the-key@crm.acme.example/api/v1"',
     "tenant 'acme', customcrm_api_url: credentials do not go into a URL"),
    ("retention_days = 7", "retention_weeks = 1", "tenant 'acme', options: unknown option 'retention_weeks'"),
    ("vars = { create_in_keap = true }", 'vars = "create_in_keap"', "tenant 'acme', options.vars: must be a table"),
    ('state = "/srv/beta/state.duckdb"', # relative to the file's folder, resolved: acme's own default
     'state = "x/../data/tenants/acme.duckdb"',
     "tenants 'acme' and 'beta' share the state file"),
    ("[tenants.beta]", "[tenants.Beta Corp]", "is not valid TOML"),
    ("[tenants.beta]", '[tenants."Beta Corp"]', "tenant 'Beta Corp': a tenant's name is lower-case letters"),
    ("[tenants.beta]", "[tenant.beta]", "unknown table 'tenant' (a tenant is [tenants.NAME])"),
    ("[tenants.beta]", "[tenants.main]", "tenant 'main': a tenant's name is lower-case letters"),
    # the secret itself where its variable's name goes, or in a URL that does not parse: never echoed
    ('keap_api_key = { env = "ACME_KEAP_KEY" }', 'keap_api_key = { env = "kp-123-the-key" }',
     "tenant 'acme', keap_api_key: env names an environment variable"),
    ('"https://crm.acme.example/api/v1"', '"https://ops:kp-123-the-key x[@crm.acme.example/api/v1"',
     "tenant 'acme', customcrm_api_url: is not a URL"),
    # a warehouse's URL holds its password: a reference, as a secret
    ("retention_days = 7\n", 'retention_days = 7\n[tenants.acme.x]\n',
     "tenant 'acme': unknown key 'x'"),
    ('state = "/srv/beta/state.duckdb"', 'warehouse = "postgresql://u:kp-123-the-key@db.example/w"',
     "tenant 'beta', warehouse: a secret is never written in the tenants file"),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "message"), BAD, ids=[case[2][:40] for case in BAD])
def test_a_wrong_tenants_file_is_one_line_naming_the_tenant_and_the_key(
    folder: Path, old: str, new: str, message: str
) -> None:
    assert old in TWO
    (folder / "tenants.toml").write_text(TWO.replace(old, new))
    with pytest.raises(ConfigurationError) as raised:
        load()
        apply("acme")
    line = str(raised.value)
    assert message in line and "\n" not in line
    assert "kp-123-the-key" not in line  # a secret written where it must not be is never echoed


def test_a_tenants_file_of_another_user_is_refused(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() == 0:  # root: the file becomes another user's
        os.chown(folder / "tenants.toml", 1, -1)
    else:  # anyone else: this process becomes another user, as far as the check can tell
        monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)
    with pytest.raises(ConfigurationError, match=r"tenants\.toml belongs to another user \(uid \d+\)"):
        load()


def test_a_secrets_variable_may_be_in_dotenv(folder: Path) -> None:
    del os.environ["ACME_KEAP_KEY"]  # a schedule's bare environment: `.env` has it
    (folder / ".env").write_text(DOTENV + "ACME_KEAP_KEY=acme-key-from-dotenv\n")
    apply("acme")
    settings = Settings.from_env()
    assert settings.keap_api_key == "acme-key-from-dotenv"
    assert settings.keap_access_token is None  # `.env`'s own KEAP_* names still reach no tenant


def test_a_tenants_file_others_can_write_is_refused(folder: Path) -> None:
    (folder / "tenants.toml").chmod(0o664)
    with pytest.raises(ConfigurationError, match=r"can be written by others \(mode 0664\).*chmod go-w"):
        load()
    (folder / "tenants.toml").chmod(0o644)  # read by others is the operator's choice: no secret is in it
    assert list(load()) == ["acme", "beta"]


def test_the_cli_says_in_one_line_what_is_wrong_with_a_tenant(folder: Path) -> None:
    env = {**os.environ, "KEAP_API_KEY": "", "CUSTOMCRM_API_TOKEN": ""}
    done = subprocess.run([sys.executable, "-m", "crmsync.cli", "status", "--tenant", "gamma"], cwd=folder,
                          env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 1
    assert (
        done.stderr.strip() == f"crmsync: no tenant 'gamma' in {folder / 'tenants.toml'} (there: acme, beta)"
    )

    del env["ACME_KEAP_KEY"]  # a sync needs the secrets; status does not
    done = subprocess.run([sys.executable, "-m", "crmsync.cli", "sync", "--tenant", "acme"], cwd=folder,
                          env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert "tenant 'acme', keap_api_key: the environment variable ACME_KEAP_KEY is not set" in done.stderr

    done = subprocess.run([sys.executable, "-m", "crmsync.cli", "status", "--all-tenants"], cwd=folder,
                          env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == [
        "tenants",
        "tenant\tlinked\torphaned\tpending\twaiting\tconflicts\trejected\tignored\tlast run",
    ]
    assert [line.split("\t")[0] for line in lines[2:]] == ["acme", "beta"]
    assert all(line.endswith("\tno sync has run yet") for line in lines[2:])


def test_each_tenants_process_starts_without_the_other_tenants_variables(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess as real

    from crmsync import tenant_runs

    (folder / "tenants.toml").write_text(TWO.replace('customcrm_api_token = { env = "BETA_CRM_TOKEN" }',
                                                     'customcrm_api_token = { env = "ACME_KEAP_KEY" }'))  # fmt: skip
    tenants = load()
    assert tenant_runs.others_variables(tenants.values(), tenants["acme"]) == {
        "BETA_REFRESH",
        "BETA_CLIENT_SECRET",
    }
    assert (
        tenant_runs.others_variables(tenants.values(), tenants["beta"]) == set()
    )  # ACME_KEAP_KEY is beta's too

    started: list[dict[str, str]] = []

    class Started(real.Popen):  # type: ignore[type-arg]
        def __init__(self, command: list[str], **options: object) -> None:
            started.append(dict(options["env"]))  # type: ignore[call-overload]
            super().__init__([sys.executable, "-c", "print('{}')"], **options)  # type: ignore[call-overload]

    monkeypatch.setattr(tenant_runs.subprocess, "Popen", Started)
    done = tenant_runs.sync_all(list(tenants.values()), [], 1, lambda run: None)
    assert [run.exit_code for run in done] == [0, 0]
    acme_env, beta_env = started
    assert (
        "BETA_REFRESH" not in acme_env
        and "BETA_CLIENT_SECRET" not in acme_env
        and "ACME_KEAP_KEY" in acme_env
    )
    assert {"BETA_REFRESH", "BETA_CLIENT_SECRET", "ACME_KEAP_KEY"} <= set(beta_env)


def test_a_tenant_on_a_warehouse_has_schemas_of_its_own_and_never_the_operators_warehouse(
    folder: Path,
) -> None:
    warehouse = "postgresql://crmsync:pw@127.0.0.1:5432/analytics"
    os.environ.update({"WAREHOUSE_URL": warehouse, "CRMSYNC_WAREHOUSE": "postgresql://op:pw@127.0.0.1/op",
                       "CRMSYNC_SCHEMA_PREFIX": "operator_"})  # fmt: skip
    (folder / "tenants.toml").write_text(
        TWO.replace('state = "/srv/beta/state.duckdb"', 'warehouse = { env = "WAREHOUSE_URL" }')
    )
    beta = load()["beta"]
    assert beta.schema_prefix == "beta_" and load()["acme"].schema_prefix is None
    assert "WAREHOUSE_URL" in beta.variables  # left out of the other tenants' processes
    apply("beta", secrets=False)  # a command that only reads still finds the warehouse
    assert (os.environ["CRMSYNC_WAREHOUSE"], os.environ["CRMSYNC_SCHEMA_PREFIX"]) == (warehouse, "beta_")
    assert os.environ["KEAP_REFRESH_TOKEN"] == ""  # no secret read
    apply("acme")  # a tenant of a DuckDB file gets no warehouse, not even the operator's
    assert (os.environ["CRMSYNC_WAREHOUSE"], os.environ["CRMSYNC_SCHEMA_PREFIX"]) == ("", "")
    assert Settings.from_env().warehouse is None

    def on_warehouse(name: str) -> str:
        return (f'[tenants.{name}]\nkeap_api_key = {{ env = "ACME_KEAP_KEY" }}\n'
                f'customcrm_api_url = "https://crm.acme.example/api/v1"\ncustomcrm_api_token = {{ env = "X" }}\n'
                f'warehouse = {{ env = "WAREHOUSE_URL" }}\nstate = "{name}.duckdb"\n')  # fmt: skip

    for names, message in ((("acme-co", "acme_co"), "would share the schemas acme_co_*"),
                           (("pg",), "the schemas pg_* are PostgreSQL's own"),
                           (("crmsync-plan",), "crmsync_* crmsync's")):  # fmt: skip
        (folder / "tenants.toml").write_text("".join(on_warehouse(name) for name in names))
        with pytest.raises(ConfigurationError, match=re.escape(message)):
            load()


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (AuthError("Keap refused the OAuth refresh; re-authorize and set KEAP_REFRESH_TOKEN", system="keap"),
         "Keap refused the OAuth refresh; re-authorize and set keap_refresh_token [keap] (key of tenant 'acme' "
         "in the tenants file)"),
        (AuthError("Keap refused the OAuth client; check KEAP_CLIENT_ID and KEAP_CLIENT_SECRET, or re-authorize "
                   "and set KEAP_REFRESH_TOKEN", system="keap"),
         "Keap refused the OAuth client; check keap_client_id and keap_client_secret, or re-authorize and set "
         "keap_refresh_token [keap] (keys of tenant 'acme' in the tenants file)"),
        (AuthError("customcrm refused the credentials (401); check the CUSTOMCRM_* settings", system="customcrm"),
         "customcrm refused the credentials (401); check the customcrm_* keys of tenant 'acme' in the tenants "
         "file [customcrm]"),
        (RunDeadline("the run's deadline passed (CRMSYNC_RUN_DEADLINE_MINUTES): it stopped", system="keap"),
         "the run's deadline passed (options.run_deadline_minutes, else CRMSYNC_RUN_DEADLINE_MINUTES): it stopped [keap] (key of tenant 'acme' in the "
         "tenants file)"),
    ],
)  # fmt: skip
def test_a_tenants_failure_line_names_the_keys_of_its_entry_not_the_environment(
    error: Exception, line: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CRMSYNC_TENANT", "acme")
    assert failure_line(error, tmp_path / "x.duckdb") == line
    monkeypatch.delenv("CRMSYNC_TENANT")
    assert failure_line(error, tmp_path / "x.duckdb") == str(error)  # not a tenant's run: as raised
