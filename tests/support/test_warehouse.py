"""support/warehouse.py without a server: the placeholders, the schemas' prefix, the URL's parts."""

from __future__ import annotations

import pytest

from support.warehouse import ENV, PREFIX_ENV, _pyformat, parts, physical, physical_query, tls


def test_question_marks_become_psycopg2_placeholders_and_percent_signs_stay_literal() -> None:
    assert _pyformat("select '?%', x like 'a%' from t where a = ? and b = ?::varchar[] and \"q?\" = 1") == (
        "select '?%%', x like 'a%%' from t where a = %s and b = %s::varchar[] and \"q?\" = 1"
    )


def test_a_prefix_moves_every_schema_the_sql_names_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    sql = (
        "create schema if not exists sync_state; insert into sync_state.links select * from main.x "
        "where table_schema in ('main', 'raw_keap_staging') and \"main\".y = 1 and domain.main = 2 "
        "and mapping = 'contacts'"
    )
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv(PREFIX_ENV, "acme_")
    assert physical(sql) == sql  # the DuckDB file: never a prefix
    monkeypatch.setenv(ENV, "postgresql://u@127.0.0.1/w")
    assert physical(sql) == (
        "create schema if not exists acme_sync_state; insert into acme_sync_state.links select * from acme_main.x "
        "where table_schema in ('acme_main', 'acme_raw_keap_staging') and \"main\".y = 1 and domain.main = 2 "
        "and mapping = 'contacts'"
    )
    monkeypatch.setenv(PREFIX_ENV, "")
    assert physical(sql) == sql


def test_an_analysts_query_gets_its_schema_names_prefixed_and_never_its_literals_or_comments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    query = (
        "select r.run_id, 'main.x' as a, E'it\\'s main.y' as b, $$sync_state.runs$$ as c, \"main\".t\n"
        "from sync_state.runs as r join main.link_contacts using (run_id) -- main.z\n"
        "where r.status = 'main' and note = 'o''main.q' /* raw_keap.contacts */ and x = staging.f(1)\n"
        'and exists (select 1 from SYNC_STATE.links, "sync_state" . runs, "main", note\'x\\\' main.k)'
    )
    monkeypatch.setenv(PREFIX_ENV, "acme_")
    monkeypatch.delenv(ENV, raising=False)
    assert physical_query(query) == query  # the DuckDB file: never a prefix
    monkeypatch.setenv(ENV, "postgresql://u@127.0.0.1/w")
    assert physical_query(query) == (
        "select r.run_id, 'main.x' as a, E'it\\'s main.y' as b, $$sync_state.runs$$ as c, \"acme_main\".t\n"
        "from acme_sync_state.runs as r join acme_main.link_contacts using (run_id) -- main.z\n"
        "where r.status = 'main' and note = 'o''main.q' /* raw_keap.contacts */ and x = acme_staging.f(1)\n"
        'and exists (select 1 from acme_sync_state.links, "acme_sync_state" . runs, "main", note\'x\\\' acme_main.k)'
    )
    # what the sync's own SQL gets (physical): its catalog literals too
    assert physical("where table_schema = 'main'") == "where table_schema = 'acme_main'"
    assert physical_query("where table_schema = 'main'") == "where table_schema = 'main'"


def test_the_urls_parts_for_dbt_and_its_tls_settings() -> None:
    url = (
        "postgresql://crm%40sync:p%2Fw@db.example:6543/analytics?sslmode=verify-full&sslrootcert=/ca.pem&x=1"
    )
    assert parts(url) == {"host": "db.example", "port": "6543", "user": "crm@sync", "password": "p/w",
                          "database": "analytics"}  # fmt: skip
    assert tls(url) == {"sslmode": "verify-full", "sslrootcert": "/ca.pem"}
    assert tls("postgresql://u@127.0.0.1/w") == {}


def test_using_a_warehouse_for_a_block_gives_the_process_its_own_values_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from support.warehouse import using

    monkeypatch.setenv(ENV, "postgresql://operator@127.0.0.1/op")
    monkeypatch.delenv(PREFIX_ENV, raising=False)
    with using("postgresql://tenant@127.0.0.1/w", "acme_"):
        assert (os.environ[ENV], os.environ[PREFIX_ENV]) == ("postgresql://tenant@127.0.0.1/w", "acme_")
        with using(None):
            assert ENV not in os.environ and PREFIX_ENV not in os.environ
        assert os.environ[PREFIX_ENV] == "acme_"
    assert os.environ[ENV] == "postgresql://operator@127.0.0.1/op" and PREFIX_ENV not in os.environ
