"""``stanchion eval agent-check``: the gold criteria, the task file, the fix/break counting, and a
small slice run through the support agent on the sample tickets (no search: nothing to ingest)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import pytest

from stanchion.agents import Agent
from stanchion.app import build
from stanchion.errors import StanchionError
from stanchion.evals.agent_check import (
    ERROR_KINDS,
    KINDS,
    Expect,
    Report,
    RunOutcome,
    Task,
    TaskOutcome,
    evaluate,
    load_tasks,
)
from stanchion.spec import IndexSpec, ServerSpec, load_spec


def _run(
    answer: str, right: bool, *, revisions: int = 0, sent_back: bool = False, draft: str = ""
) -> RunOutcome:
    return RunOutcome(answer, right, 2 + 2 * revisions, revisions, 0.01, draft or answer, sent_back)


class TestGold:
    def test_a_number_matches_as_a_number(self) -> None:
        """A gold figure is not found inside another number, and is found however it is spelled."""
        assert not Expect(all=("9",)).met("19 tickets are pending.")
        assert Expect(all=("9",)).met("9 tickets are pending.")
        assert Expect(all=("1577.5",)).met("The total is $1,577.50.")
        assert not Expect(none=("17",)).met("There are 17 open tickets.")

    def test_failure_needs_a_statement_of_failure(self) -> None:
        """The reviser's note that it could not address the findings is no statement that a tool failed."""
        failure = Expect(failure=True)
        assert failure.met("The tickets tool failed (error: timeout), so I cannot answer it.")
        assert failure.met("The ticket database timed out.")
        assert not failure.met("Several tickets are pending. I could not address the check's findings.")
        assert not failure.met("")


class TestTasks:
    def test_the_packaged_set(self) -> None:
        """At least 50 tasks, every kind present, planted errors about half; a planted error fails
        its task's gold and a planted reformatting meets it."""
        tasks = load_tasks()
        assert len(tasks) >= 50
        assert {t.kind for t in tasks} == set(KINDS)
        planted_errors = sum(t.kind in ERROR_KINDS for t in tasks)
        assert 0.35 * len(tasks) <= planted_errors <= 0.65 * len(tasks)
        assert any(t.fault is not None and t.fault.error == "bad_table" for t in tasks)
        for t in tasks:
            if t.plant is not None:
                assert t.right(t.plant) == (t.kind == "reformatted"), t.id

    def test_a_bad_line_is_named(self, tmp_path: Path) -> None:
        path = tmp_path / "tasks.jsonl"
        good = {"id": "a", "task": "How many open tickets are there?", "expect": {"all": ["13"]}}
        path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", "kind": "made_up"}) + "\n")
        with pytest.raises(StanchionError, match=r"line 2: kind 'made_up' needs a plant"):
            load_tasks(path)
        path.write_text(json.dumps({**good, "gold": 1}) + "\n")
        with pytest.raises(StanchionError, match=r"line 1: unknown keys \['gold'\]"):
            load_tasks(path)


class TestCounting:
    def test_fixed_broken_still_wrong_and_the_check_alone(self) -> None:
        """Outcomes are counted from the two runs; caught and false alarms from the first draft."""
        task = Task("t", "How many open tickets are there?", "made_up", (Expect(all=("13",)),), plant="x")
        fixed = TaskOutcome(
            task, _run("17", False), _run("13", True, revisions=1, sent_back=True, draft="17")
        )
        broken = TaskOutcome(
            task, _run("13", True), _run("12", False, revisions=1, sent_back=True, draft="13")
        )
        wrong = TaskOutcome(task, _run("17", False), _run("17", False, draft="17"))
        right = TaskOutcome(task, _run("13", True), _run("13", True))
        report = Report((fixed, broken, wrong, right)).as_json()
        assert (report["fixed"], report["broken"], report["still_wrong"]) == (1, 1, 1)
        assert (report["correct_without_check"], report["correct_with_check"]) == (2, 2)
        assert (report["caught"], report["false_alarms"], report["wrong_first_drafts"]) == (1, 1, 2)
        assert report["revisions"] == 2 and report["mean_added_steps"] == 1.0
        assert report["by_kind"]["made_up"]["tasks"] == 4


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("agent-check") / "kestrel"
    shutil.copytree(Path(str(files("stanchion").joinpath("sample"))), root)
    return root


@pytest.fixture(scope="module")
def support(sample: Path) -> Iterator[Agent]:
    root = sample
    spec = load_spec(root / "stanchion.yaml")
    spec = spec.model_copy(
        update={
            "index": IndexSpec(path=str(root / "index.db")),
            "server": ServerSpec(state_path=str(root / "state.db")),
        }
    )
    app = build(spec)
    yield app.agent("support")
    app.close()


def test_a_slice_through_the_support_agent(support: Agent, tmp_path: Path) -> None:
    """Five tasks through the real loop and check: two fixed (a failed tool the draft ignored,
    retried after the feedback; a made-up count, answered afresh from the results), a right answer
    left alone, and two right reformatted drafts the check lets through (a total of three figures,
    a quotient rounded as written)."""
    rows = [
        {"id": "right", "task": "How many open tickets are there?", "expect": {"all": ["13"]}},
        {"id": "fixed", "kind": "ignored_failure", "task": "How many open tickets are there?",
         "fault": {"tool": "tickets", "error": "timeout", "times": 1},
         "plant": "The open tickets are being handled.", "expect": [{"all": ["13"]}, {"failure": True}]},
        {"id": "wrong", "kind": "made_up", "task": "How many open tickets are there?",
         "plant": "There are 17 open tickets.", "expect": {"all": ["13"], "none": ["17"]}},
        {"id": "alarm", "kind": "reformatted", "task": "How many tickets per status?",
         "plant": "There are 40 tickets: 18 closed, 13 open and 9 pending.", "expect": {"all": ["40"]}},
        {"id": "broken", "kind": "reformatted", "task": "What is 9 / 13 * 100?",
         "plant": "It is about 69.2.", "expect": {"all": ["69.2"], "none": ["could not address"]}},
    ]  # fmt: skip
    path = tmp_path / "slice.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = asyncio.run(evaluate(support, load_tasks(path), warm=False))
    outcomes = {o.task.id: o for o in report.outcomes}
    assert outcomes["fixed"].fixed and outcomes["fixed"].with_check.answer.startswith("There are 13 open")
    assert outcomes["wrong"].fixed and outcomes["wrong"].caught
    assert outcomes["wrong"].with_check.revisions == 1  # one revision: the count from the result
    for id_ in ("alarm", "broken"):  # right, and left alone
        assert not outcomes[id_].false_alarm and not outcomes[id_].broken and outcomes[id_].with_check.right
    right = outcomes["right"]
    assert right.without.right and right.with_check.right and not right.with_check.first_sent_back
    counts = report.as_json()
    assert (counts["tasks"], counts["fixed"], counts["broken"], counts["still_wrong"]) == (5, 2, 0, 0)
    assert (counts["correct_without_check"], counts["correct_with_check"]) == (3, 5)
    assert (counts["caught"], counts["false_alarms"]) == (2, 0)
    assert counts["by_kind"]["reformatted"]["false_alarms"] == 0


def test_the_command_reports_the_keys(sample: Path, tmp_path: Path) -> None:
    """``stanchion eval agent-check --json`` on a spec and a task file: the documented keys."""
    from typer.testing import CliRunner

    from stanchion.cli import app

    path = tmp_path / "tasks.jsonl"
    rows = [
        {"id": "right", "task": "How many tickets are pending?", "expect": {"all": ["9"]}},
        {"id": "off", "kind": "off_by_one", "task": "How many tickets are pending?",
         "plant": "10 tickets are pending.", "expect": {"all": ["9"], "none": ["10"]}},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = sample / "stanchion.yaml"
    result = CliRunner().invoke(
        app, ["eval", "agent-check", "--spec", str(spec), "--tasks", str(path), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"tasks", "fixed", "broken", "correct_without_check", "correct_with_check", "by_kind"} <= set(
        report
    )
    # The off-by-one draft is caught and answered afresh from the count: fixed.
    assert (report["tasks"], report["correct_without_check"], report["correct_with_check"]) == (2, 1, 2)
    assert (report["fixed"], report["broken"]) == (1, 0)
    assert set(report["by_kind"]) == {"none", "off_by_one"}
    bad = CliRunner().invoke(
        app, ["eval", "agent-check", "--spec", str(spec), "--tasks", str(tmp_path / "no.jsonl")]
    )
    assert bad.exit_code == 2 and "cannot read the agent-check tasks" in bad.output
