"""The demo's ``support`` agent on the sample spec, offline: the planner model, SQL over the
sample tickets database and search over the sample policies, through ``run_agent`` (the request
pipeline the CLI and the demo use)."""

from __future__ import annotations

import asyncio
import shutil
from importlib.resources import files
from pathlib import Path

import pytest

from stanchion.app import build
from stanchion.cli.agent import run_agent
from stanchion.demo import AGENT_TASK
from stanchion.spec import IndexSpec, ServerSpec, load_spec


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("support") / "kestrel"
    shutil.copytree(Path(str(files("stanchion").joinpath("sample"))), root)
    return root


def test_the_support_agent_counts_tickets_and_quotes_the_policy(sample: Path) -> None:
    spec = load_spec(sample / "stanchion.yaml")
    spec = spec.model_copy(
        update={
            "index": IndexSpec(path=str(sample / "index.db")),
            "server": ServerSpec(state_path=str(sample / "state.db")),
        }
    )
    app = build(spec)
    try:
        app.pipeline.run([spec.source("policies")])
        run = asyncio.run(run_agent(app, "support", AGENT_TASK, user="tester", show=None))
    finally:
        app.close()
    assert run.stop_reason == "answered", run.as_json()
    assert sorted(t.name for t in run.tool_calls) == ["search", "tickets"]  # both at once, in step 1
    assert {t.step for t in run.tool_calls} == {1} and all(t.ok for t in run.tool_calls)
    # 9 of the default tenant's open tickets mention it (12 would mean another tenant's leaked in).
    assert run.answer.startswith("9 open support tickets mention the refund policy.")
    assert "10 business days" in run.answer  # quoted from sample/policies/refund-policy.md
    assert run.as_json()["stop_reason"] == "answered" and run.as_json()["cost_usd"] == 0.0
