"""A spec-declared route end to end: `stanchion ask` over a fallback chain of OpenAI-compatible models
served by the fake server on real loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stanchion.cli import app
from stanchion.testing.fake_openai import FakeOpenAIServer, Reply

ANSWER = "Expenses above $5,000 need approval from the CFO [1]."


@pytest.fixture
def servers() -> Iterator[tuple[FakeOpenAIServer, FakeOpenAIServer]]:
    with FakeOpenAIServer() as primary, FakeOpenAIServer() as backup:
        yield primary, backup


def write_spec(root: Path, primary: str, backup: str) -> Path:
    docs = root / "docs"
    docs.mkdir()
    (docs / "expenses.md").write_text(
        "# Expense policy\n\nExpenses above $5,000 need approval from the CFO. "
        "Managers approve up to $500.\n",
        encoding="utf-8",
    )
    (docs / "lunch.md").write_text("# Office\n\nLunch is served on Wednesdays.\n", encoding="utf-8")
    spec = root / "stanchion.yaml"
    spec.write_text(
        f"""
sources: [{{name: docs, path: docs}}]
models:
  primary: {{provider: openai, base_url: "{primary}", model: big-model, api_key_env: E2E_KEY,
            max_retries: 0, timeout_s: 5, price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}}}
  backup: {{provider: openai, base_url: "{backup}", model: small-model, max_retries: 0, timeout_s: 5,
           price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}}}
routes:
  default: {{models: [primary, backup]}}
""",
        encoding="utf-8",
    )
    return spec


def ask(spec: Path) -> tuple[int, dict[str, object]]:
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", "--spec", str(spec), "--json"]).exit_code == 0
    result = runner.invoke(app, ["ask", "Who approves expenses above $5,000?", "--spec", str(spec), "--json"])
    return result.exit_code, json.loads(result.stdout) if result.exit_code == 0 else {"error": result.stderr}


def test_answer_with_citation_cost_and_key_only_in_header(
    tmp_path: Path, servers: tuple[FakeOpenAIServer, FakeOpenAIServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    primary, backup = servers
    monkeypatch.setenv("E2E_KEY", "sk-e2e-secret")
    primary.script(Reply(text=ANSWER, usage=(1000, 20)))
    code, answer = ask(write_spec(tmp_path, primary.url, backup.url))
    assert code == 0, answer
    assert answer["answer"] == ANSWER and answer["model"] == "primary"
    citations = answer["citations"]
    assert isinstance(citations, list) and citations[0]["document_id"] == "docs:expenses.md"
    assert answer["cost_usd"] == pytest.approx((1000 * 1.0 + 20 * 2.0) / 1e6)
    (request,) = primary.requests
    assert request.headers["authorization"] == "Bearer sk-e2e-secret"
    body = json.dumps(request.json)
    assert "need approval from the CFO" in body and "sk-e2e-secret" not in body
    assert backup.requests == []


def test_server_error_falls_back_to_the_next_model(
    tmp_path: Path, servers: tuple[FakeOpenAIServer, FakeOpenAIServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    primary, backup = servers
    monkeypatch.setenv("E2E_KEY", "sk-e2e-secret")
    primary.script(Reply(status=500, body={"error": {"message": "boom"}}))
    backup.script(Reply(text=ANSWER))
    code, answer = ask(write_spec(tmp_path, primary.url, backup.url))
    assert code == 0, answer
    assert answer["model"] == "backup" and "[1]" in str(answer["answer"])
    assert len(primary.requests) == 1 and len(backup.requests) == 1


def test_unsupported_sentence_is_dropped_after_one_retry(
    tmp_path: Path, servers: tuple[FakeOpenAIServer, FakeOpenAIServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    primary, backup = servers
    monkeypatch.setenv("E2E_KEY", "sk-e2e-secret")
    invented = "The CEO must also sign every purchase above $900 [1]."
    primary.script(Reply(text=f"{ANSWER} {invented}"), Reply(text=f"{ANSWER} {invented}"))
    code, answer = ask(write_spec(tmp_path, primary.url, backup.url))
    assert code == 0, answer
    assert answer["answer"] == ANSWER
    assert len(primary.requests) == 2  # the answer, then one corrective retry naming the sentence
    assert "The CEO must also sign" in json.dumps(primary.requests[1].json)
