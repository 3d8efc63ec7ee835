"""``stanchion memory list|delete`` over the spec's state database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from stanchion.cli import app
from stanchion.memory import Candidate, DatabaseMemoryStore, Memory
from stanchion.memory.fakes import WordEmbedder
from stanchion.state.db import SQLiteDatabase

runner = CliRunner()


def _setup(tmp_path: Path) -> tuple[Path, Memory]:
    spec = tmp_path / "stanchion.yaml"
    spec.write_text(yaml.safe_dump({"index": {"path": "index.db"}, "server": {"state_path": "state.db"}}))
    store = DatabaseMemoryStore(SQLiteDatabase(tmp_path / "state.db"), owns_db=True)
    memory = Memory(store, WordEmbedder())
    memory.write("default", "ann", [Candidate("preference", "preference:drink", "I love tea", "tea")])
    memory.write(
        "default", "ann", [Candidate("preference", "preference:drink", "I now drink coffee", "coffee")]
    )
    memory.write("default", "ann", [Candidate("fact", "fact:home_city", "I live in Oslo", "Oslo")])
    memory.write("default", "bob", [Candidate("fact", "fact:home_city", "I live in Rome", "Rome")])
    memory.write("acme", "ann", [Candidate("fact", "fact:home_city", "I live in Lima", "Lima")])
    return spec, memory


def _json(args: list[str]) -> Any:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_list_is_per_user_and_tenant(tmp_path: Path) -> None:
    spec, memory = _setup(tmp_path)
    listed = _json(["memory", "list", "--user", "ann", "--spec", str(spec), "--json"])
    assert sorted(m["value"] for m in listed["memories"]) == ["Oslo", "coffee"]
    full = _json(["memory", "list", "--user", "ann", "--history", "--spec", str(spec), "--json"])
    assert len(full["memories"]) == 3
    other = _json(["memory", "list", "--user", "ann", "--tenant", "acme", "--spec", str(spec), "--json"])
    assert [m["value"] for m in other["memories"]] == ["Lima"]
    table = runner.invoke(app, ["memory", "list", "--user", "ann", "--spec", str(spec)])
    assert table.exit_code == 0 and "coffee" in table.stdout and "Rome" not in table.stdout
    memory.store.close()


def test_delete_one_and_all(tmp_path: Path) -> None:
    spec, memory = _setup(tmp_path)
    oslo = memory.store.current("default", "ann", "fact:home_city")
    assert oslo is not None
    refused = runner.invoke(app, ["memory", "delete", oslo.id, "--user", "bob", "--spec", str(spec)])
    assert refused.exit_code == 2 and "no memory" in refused.output
    done = _json(["memory", "delete", oslo.id, "--user", "ann", "--spec", str(spec), "--json"])
    assert done["deleted"] == 1
    wiped = _json(["memory", "delete", "--all", "--user", "ann", "--spec", str(spec), "--json"])
    assert wiped["deleted"] == 2  # coffee and the tea it replaced
    assert memory.store.memories("default", "ann", include_history=True) == []
    assert [m.value for m in memory.store.memories("default", "bob")] == ["Rome"]
    assert [m.value for m in memory.store.memories("acme", "ann")] == ["Lima"]
    memory.store.close()


def test_delete_needs_an_id_or_all(tmp_path: Path) -> None:
    spec, memory = _setup(tmp_path)
    result = runner.invoke(app, ["memory", "delete", "--user", "ann", "--spec", str(spec)])
    assert result.exit_code == 2 and "--all" in result.output
    memory.store.close()
