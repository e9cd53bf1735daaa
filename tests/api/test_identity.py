"""Principals are opaque ids, never display names: two enterprises of the same name share nothing."""

import pytest
from typer.testing import CliRunner

from api import cli
from api.security import KeyStore
from indexer.errors import JiangxinError
from rag.db import connect
from tests.conftest import MINI

WELD_Q = "不锈钢管氩弧焊打底焊缝背面氧化发黑怎么办（同名企业）"


@pytest.fixture
def store(tmp_path):
    return KeyStore(connect(f"sqlite:///{tmp_path / 'keys.db'}"))


def test_keys_without_a_principal_get_fresh_opaque_ids(store):
    a, b = (store.create("enterprise", "某机械厂")[1] for _ in range(2))
    ops = store.create("maintainer", "ops")[1]
    assert a.principal != b.principal and a.name == b.name == "某机械厂"
    assert a.principal.startswith("ent-") and ops.principal.startswith("ops-")
    assert "某机械厂" not in a.principal


def test_an_enterprise_can_get_another_key_for_its_own_principal(store):
    first = store.create("enterprise", "某机械厂")[1]
    key, second = store.create("enterprise", "某机械厂 (rotated)", first.principal)
    assert second.principal == first.principal and store.authenticate(key).principal == first.principal


@pytest.mark.parametrize("role,principal,reason", [
    ("craftsman", None, "craftsman key needs --principal"), ("craftsman", "  ", "craftsman key needs --principal"),
    ("enterprise", "某 机械厂", "is not an id"), ("enterprise", "-ent", "is not an id"),
    ("enterprise", "e" * 129, "is not an id")])
def test_a_key_needs_a_principal_that_is_an_id(store, role, principal, reason):
    with pytest.raises(JiangxinError, match=reason):
        store.create(role, "杜雅琴", principal)


def test_enterprises_with_the_same_name_share_no_questions_or_tickets(server):
    store = KeyStore(connect(server.env["JIANGXIN_DATABASE_URL"]))
    (key_1, ent_1), (key_2, ent_2) = (store.create("enterprise", "同名机械厂") for _ in range(2))
    assert ent_1.principal != ent_2.principal
    with server.client() as c:
        first = c.post("/v1/questions", json={"question": WELD_Q}, headers={"Authorization": f"Bearer {key_1}"}).json()
        assert first["status"] == "escalated"
        as_2 = {"Authorization": f"Bearer {key_2}"}
        assert c.get(f"/v1/questions/{first['id']}", headers=as_2).status_code == 404
        assert c.get(f"/v1/tickets/{first['ticket']['id']}", headers=as_2).status_code == 404
        assert c.get("/v1/questions", headers=as_2).json() == []
        assert c.get("/v1/tickets", headers=as_2).json() == []
        # the same question from the other enterprise is its own ticket, not folded into the first one's
        second = c.post("/v1/questions", json={"question": WELD_Q}, headers=as_2).json()
        assert second["ticket"]["id"] != first["ticket"]["id"]
        assert [q["id"] for q in c.get("/v1/questions", headers=as_2).json()] == [second["id"]]
        assert [q["id"] for q in c.get("/v1/questions", headers={"Authorization": f"Bearer {key_1}"}).json()] == [first["id"]]


@pytest.fixture
def cli_db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("JIANGXIN_DATABASE_URL", url)
    monkeypatch.setenv("JIANGXIN_CORPUS_DIR", str(MINI))
    return url


def test_cli_keys_create_gives_each_enterprise_its_own_principal(cli_db):
    runner = CliRunner()
    outputs = [runner.invoke(cli.app, ["keys", "create", "--role", "enterprise", "--name", "某机械厂"]) for _ in range(2)]
    assert all(o.exit_code == 0 for o in outputs), [o.output for o in outputs]
    principals = {o.output.split("principal ")[1].split()[0] for o in outputs}
    assert len(principals) == 2 and all(p.startswith("ent-") for p in principals)
    key = outputs[0].output.strip().splitlines()[-1]
    assert KeyStore(connect(cli_db)).authenticate(key).principal in principals


def test_cli_craftsman_key_must_name_a_craftsman_record(cli_db):
    runner = CliRunner()
    missing = runner.invoke(cli.app, ["keys", "create", "--role", "craftsman", "--name", "李红"])
    assert missing.exit_code == 1 and "--principal" in missing.output
    unknown = runner.invoke(cli.app, ["keys", "create", "--role", "craftsman", "--name", "李红", "--principal", "李红"])
    assert unknown.exit_code == 1 and "no craftsman '李红'" in unknown.output and "cm-m-2" in unknown.output
    ok = runner.invoke(cli.app, ["keys", "create", "--role", "craftsman", "--name", "李红", "--principal", "cm-m-2"])
    assert ok.exit_code == 0 and "principal cm-m-2" in ok.output
    assert [p.principal for p in KeyStore(connect(cli_db)).list()] == ["cm-m-2"]


def test_bootstrap_keys_authenticate_as_their_roles(cli_db, capsys):
    cli._bootstrap(cli.settings(), "127.0.0.1", 8000)
    printed = capsys.readouterr().out
    store = KeyStore(connect(cli_db))
    keys = {line.split(":")[0].strip(): line.split(":", 1)[1].split()[0] for line in printed.splitlines()
            if line.split(":")[0].strip() in ("maintainer key", "enterprise key", "craftsman key")}
    who = {name: store.authenticate(key) for name, key in keys.items()}
    assert who["maintainer key"].role == "maintainer" and who["maintainer key"].principal.startswith("ops-")
    assert (who["enterprise key"].role, who["enterprise key"].principal) == ("enterprise", "demo-enterprise")
    assert who["craftsman key"].role == "craftsman" and who["craftsman key"].principal == "cm-m-1"
