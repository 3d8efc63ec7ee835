"""The sample support database the project ships for the demo's ``support`` agent: the committed file
holds exactly the rows its script writes, and the demo's question has one right count per tenant."""

from __future__ import annotations

import importlib.util
import sqlite3
from importlib.resources import files
from pathlib import Path
from types import ModuleType

from stanchion.request_context import DEFAULT_TENANT, RequestContext
from stanchion.tools.sql import build

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = Path(str(files("stanchion").joinpath("sample")))
COUNT_OPEN_REFUND_POLICY = (
    "SELECT count(*) FROM tickets WHERE status = 'open' "
    "AND (subject LIKE '%refund policy%' OR body LIKE '%refund policy%')"
)


def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_sample_tickets", ROOT / "bench" / "make_sample_tickets.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
        found = conn.execute("SELECT * FROM tickets ORDER BY id").fetchall()
    conn.close()
    return found


class TestSampleTickets:
    def test_the_committed_file_holds_exactly_the_scripts_rows(self, tmp_path: Path) -> None:
        make = script()
        make.write(tmp_path / "tickets.db")
        assert rows(SAMPLE / "tickets.db") == rows(tmp_path / "tickets.db")
        assert len(make.TICKETS) == 44

    def test_the_demo_question_counts_only_the_callers_tenant(self) -> None:
        """9 open tickets of the default tenant mention the refund policy; another tenant has 3,
        so a query that leaked across tenants would answer 12."""
        tool = build(
            "tickets",
            {"database": "tickets.db", "tenant_column": "tenant"},
            retriever=lambda: None,  # type: ignore[arg-type,return-value]
            base_dir=SAMPLE,
        )
        ask = {"query": COUNT_OPEN_REFUND_POLICY}
        assert tool.call(ask, RequestContext(DEFAULT_TENANT)).data["rows"] == [[9]]
        assert tool.call(ask, RequestContext("harbor-line")).data["rows"] == [[3]]
        assert (
            "tickets(id INTEGER, subject TEXT, body TEXT, status TEXT, created_at TEXT, customer TEXT)"
            in (tool.spec.description)
        )

    def test_the_sample_corpus_states_the_refund_policy(self) -> None:
        policy = (SAMPLE / "policies" / "refund-policy.md").read_text(encoding="utf-8")
        assert "within 30 days of the delivery date" in policy
        assert "original payment method within 10 business days" in policy
