"""`stanchion keys`, `stanchion audit` and `stanchion migrate`, and the request id on log lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from stanchion.cli import app
from stanchion.logs import JsonFormatter, request_id
from stanchion.state import AuditRecord, open_state

runner = CliRunner()


def _spec(tmp_path: Path, index: dict[str, object] | None = None) -> str:
    spec = tmp_path / "stanchion.yaml"
    spec.write_text(
        yaml.safe_dump({"index": index or {"path": "index.db"}, "server": {"state_path": "state.db"}})
    )
    return str(spec)


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    created = runner.invoke(app, ["keys", "create", "--spec", spec, "--tenant", "acme", "--user", "ana",
                                  "--groups", "ops, finance", "--scopes", "query,ingest", "--json"])  # fmt: skip
    assert created.exit_code == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["key"].startswith("sk-stn-") and key["groups"] == ["ops", "finance"]
    listed = json.loads(runner.invoke(app, ["keys", "list", "--spec", spec, "--json"]).stdout)
    assert [k["id"] for k in listed] == [key["id"]] and "key" not in listed[0]
    assert key["key"] not in runner.invoke(app, ["keys", "list", "--spec", spec]).stdout
    assert runner.invoke(app, ["keys", "revoke", key["id"], "--spec", spec]).exit_code == 0
    again = runner.invoke(app, ["keys", "revoke", key["id"], "--spec", spec])
    assert again.exit_code == 2 and "no active key" in again.stderr
    listed = json.loads(runner.invoke(app, ["keys", "list", "--spec", spec, "--json"]).stdout)
    assert listed[0]["revoked_at"] is not None
    state = open_state(sqlite_path=tmp_path / "state.db")
    try:
        events = [(r.action, r.key_id) for r in state.audit_log("acme")]
    finally:
        state.close()
    assert events == [("keys.revoke", key["id"]), ("keys.create", key["id"])]


def test_audit_shows_the_log_with_filters_and_a_periods_usage(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    state = open_state(sqlite_path=tmp_path / "state.db")
    try:
        state.audit(
            [
                AuditRecord("search", "acme", "ana", "k1", "r1", 200, at=1793491200.0, query="refunds"),
                AuditRecord("answer", "acme", "bob", "k2", "r2", 200, at=1793577600.0, query="budget",
                            input_tokens=30, output_tokens=7, cost_usd=0.002),
                AuditRecord("answer", "globex", "eve", "k3", "r3", 200, at=1793577601.0, query="launch"),
            ]
        )  # fmt: skip
    finally:
        state.close()
    everything = json.loads(runner.invoke(app, ["audit", "show", "--spec", spec, "--json"]).stdout)
    assert [r["request_id"] for r in everything["records"]] == ["r3", "r2", "r1"] and everything[
        "usage"
    ] is None
    acme_day_two = runner.invoke(app, ["audit", "show", "--spec", spec, "--json", "--tenant", "acme",
                                       "--since", "2026-11-02", "--until", "2026-11-03T00:00:00+00:00"])  # fmt: skip
    report = json.loads(acme_day_two.stdout)
    assert [r["query"] for r in report["records"]] == ["budget"]
    assert report["usage"] == {"requests": 1, "input_tokens": 30, "output_tokens": 7, "cost_usd": 0.002}
    by_user = runner.invoke(app, ["audit", "show", "--spec", spec, "--user", "ana", "--since", "1793491200"])
    assert by_user.exit_code == 0 and "refunds" in by_user.stdout and "budget" not in by_user.stdout
    oldest = everything["records"][-1]["id"]
    page_two = runner.invoke(app, ["audit", "show", "--spec", spec, "--json", "--before", str(oldest + 1)])
    assert [r["request_id"] for r in json.loads(page_two.stdout)["records"]] == ["r1"]
    bad = runner.invoke(app, ["audit", "show", "--spec", spec, "--since", "last tuesday"])
    assert bad.exit_code == 2 and "--since" in bad.stderr


def test_audit_prune_deletes_old_records_and_audits_itself(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    state = open_state(sqlite_path=tmp_path / "state.db")
    try:
        state.audit([AuditRecord("search", "acme", "ana", "k", f"r{day}", 200, at=1793491200.0 + day * 86400)
                     for day in range(3)])  # fmt: skip
    finally:
        state.close()
    refused = runner.invoke(
        app, ["audit", "prune", "--spec", spec, "--before", "2026-11-02T12:00"], input="n\n"
    )
    assert refused.exit_code == 1
    neither = runner.invoke(app, ["audit", "prune", "--spec", spec, "--yes"])
    assert neither.exit_code == 2 and "--older-than-days" in neither.stderr
    done = runner.invoke(
        app, ["audit", "prune", "--spec", spec, "--before", "2026-11-02T12:00", "--yes", "--json"]
    )
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["deleted"] == 2
    left = json.loads(runner.invoke(app, ["audit", "show", "--spec", spec, "--json"]).stdout)["records"]
    assert [(r["action"], r["request_id"]) for r in left] == [("audit.prune", ""), ("search", "r2")]
    assert left[0]["detail"]["deleted"] == 2


def test_keys_create_rejects_unknown_scopes(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "create", "--spec", _spec(tmp_path), "--tenant", "a", "--user", "u",
                                 "--scopes", "query,root"])  # fmt: skip
    assert result.exit_code == 2 and "root" in result.stderr and "admin" in result.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrate_applies_once(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    index: dict[str, object] = {"path": "index.db"}
    if backend == "postgres":
        index = {"backend": "postgres", "dsn": request.getfixturevalue("pg_dsn")}
    spec = _spec(tmp_path, index)
    first = runner.invoke(app, ["migrate", "--spec", spec, "--json"])
    assert first.exit_code == 0, first.stderr
    applied = json.loads(first.stdout)["applied"]
    assert "s001_keys_jobs_audit" in applied
    if backend == "postgres":
        assert "m001_initial" in applied
    second = json.loads(runner.invoke(app, ["migrate", "--spec", spec, "--json"]).stdout)
    assert second == {"backend": backend, "applied": []}


def test_migrate_names_an_unreachable_database_without_its_password(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {"backend": "postgres", "dsn": "postgresql://app:hunter2@127.0.0.1:1/db"})
    result = runner.invoke(app, ["migrate", "--spec", spec])
    assert result.exit_code == 2
    assert "hunter2" not in result.stderr and "127.0.0.1" in result.stderr


def test_log_lines_carry_the_request_id() -> None:
    record = logging.LogRecord("stanchion.x", logging.INFO, __file__, 1, "request", None, None)
    token = request_id.set("req-7")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id.reset(token)
    assert line["request_id"] == "req-7" and line["event"] == "request"


def test_serve_rejects_an_unknown_log_level(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--spec", _spec(tmp_path), "--log-level", "loud"])
    assert result.exit_code == 2 and "loud" in result.stderr and "warning" in result.stderr
