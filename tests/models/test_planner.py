"""PlannerModel: an offline ChatModel that calls tools by rules and answers from their results."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from stanchion.core.embed import RecentQueries, SentenceTransformerEmbedder
from stanchion.errors import ToolError
from stanchion.evals.planner import evaluate, load_tasks
from stanchion.models.base import ChatModel, ChatOptions
from stanchion.models.planner import CANNOT_ADDRESS, PlannerModel
from stanchion.models.planner_answer import count_sentence
from stanchion.models.planner_rules import split_task, tool_shape
from stanchion.models.planner_sql import PlannerRules
from stanchion.models.registry import build_model
from stanchion.request_context import RequestContext
from stanchion.retrieve.search import Retriever
from stanchion.spec import ModelSpec
from stanchion.testing.chat_model_suite import ChatModelConformance
from stanchion.tools import calculator, search, sql
from stanchion.tools.base import Tool
from stanchion.types import Completion, Message, ToolCall, ToolSpec

ROOT = Path(__file__).resolve().parents[2]
TICKETS = ROOT / "src" / "stanchion" / "sample" / "tickets.db"
DEMO_TASK = "How many open support tickets mention the refund policy, and what does the policy say?"
CONTEXT = RequestContext("default")
# What the search tool returns for "refund policy" over the sample corpus (its format: numbered passages).
REFUND_PASSAGES = (
    "[1] Kestrel Freight Customer Refund Policy\n"
    "This policy says when a Kestrel Freight customer gets money back for a shipment, how much, and how\n"
    "fast. It was last updated on **January 15, 2026**.\n\n"
    "[2] Kestrel Freight Customer Refund Policy\n"
    "- Customers ask for a refund **within 30 days of the delivery date** (or of the guaranteed date, for\n"
    "a shipment that never arrived), through the customer portal or by replying to the Support ticket.\n"
    "- Refunds go back to the **original payment method within 10 business days** of approval.\n"
    "- Support agents approve refunds up to **$2,500**; above that, the Customer Support lead approves.\n\n"
    "[3] Expense Policy\n"
    "Client meals above $90 per person are not reimbursed."
)


def _no_retriever() -> Retriever:
    raise AssertionError("search is not run in these tests")


@pytest.fixture(scope="module")
def tools() -> dict[str, Tool]:
    return {
        "sql": sql.build(
            "tickets",
            {
                "database": str(TICKETS),
                "tenant_column": "tenant",
                "description": "Kestrel Freight support tickets.",
            },
            retriever=_no_retriever,
        ),
        "search": search.SearchTool(_no_retriever),
        "calculator": calculator.build("calculator", {}, retriever=_no_retriever),
    }


@pytest.fixture(scope="module")
def remembering(embedder: SentenceTransformerEmbedder) -> RecentQueries:
    """The real MiniLM, each question embedded once across the module (the sets are planned twice)."""
    return RecentQueries(embedder)


@pytest.fixture(scope="module")
def model(remembering: RecentQueries) -> PlannerModel:
    return PlannerModel(remembering)


def specs(tools: dict[str, Tool], *kinds: str) -> tuple[ToolSpec, ...]:
    return tuple(tools[k].spec for k in kinds or tools)


def turn(
    model: PlannerModel, messages: list[Message], tools: tuple[ToolSpec, ...], **options: Any
) -> Completion:
    return asyncio.run(model.complete(messages, ChatOptions(tools=tools, **options)))


def run_calls(tools: dict[str, Tool], calls: tuple[ToolCall, ...]) -> list[Message]:
    """The assistant turn and each call's result, as an agent loop would append them."""
    by_name = {t.spec.name: t for t in tools.values()}
    out = [Message("assistant", "", tool_calls=calls)]
    for call in calls:
        if call.name == "search":
            content = REFUND_PASSAGES
        else:
            try:
                content = by_name[call.name].call(call.arguments, CONTEXT).content
            except ToolError as exc:
                content = f"Error: {exc}"
        out.append(Message("tool", content, tool_call_id=call.id, name=call.name))
    return out


class TestPlanning:
    def test_the_demo_task_is_two_calls_in_one_completion(
        self, model: PlannerModel, tools: dict[str, Tool]
    ) -> None:
        """The count goes to sql, the policy to search, both in one turn (the loop runs them together)."""
        completion = turn(model, [Message("user", DEMO_TASK)], specs(tools))
        assert completion.finish_reason == "tool_calls" and completion.text == ""
        assert [c.name for c in completion.tool_calls] == ["tickets", "search"]
        assert len({c.id for c in completion.tool_calls}) == 2
        query = completion.tool_calls[0].arguments["query"]
        assert "COUNT(*)" in query and "status = 'open'" in query and "'%refund policy%'" in query
        assert completion.tool_calls[1].arguments == {"query": "refund policy"}
        # The SQL it wrote counts what the question asks: 9 of the default tenant's tickets.
        assert tools["sql"].call(completion.tool_calls[0].arguments, CONTEXT).data["rows"] == [[9]]

    def test_sub_questions(self) -> None:
        """A task is cut at '?', before 'and'/'also' + a question word, never inside a list of names."""
        assert split_task(DEMO_TASK) == [
            "How many open support tickets mention the refund policy",
            "what does the policy say?",
        ]
        assert split_task("How many tickets are open and pending?") == [
            "How many tickets are open and pending?"
        ]
        assert len(split_task("How many tickets are closed? Also, who approves refunds?")) == 2

    def test_sql_follows_the_schema_it_is_given(self, model: PlannerModel) -> None:
        """Another table, another dialect: the columns come from the description, ILIKE on PostgreSQL."""
        orders = ToolSpec(
            "orders_db",
            "Shop orders. Runs one read-only PostgreSQL SELECT and returns at most 200 rows. "
            "Tables: orders(id INTEGER, customer TEXT, total NUMERIC, status TEXT, notes TEXT, placed_at TEXT).",
            {"type": "object", "properties": {"sql": {"type": "string"}}, "required": ["sql"]},
        )
        plan = model.plan("What is the average total of shipped orders mentioning gift wrap?", [orders])
        assert plan.calls[0].arguments == {
            "sql": "SELECT AVG(total) AS value FROM orders WHERE (notes ILIKE '%gift wrap%') AND status = 'shipped'"
        }

    def test_a_search_like_tool_gets_its_own_parameter(self, model: PlannerModel) -> None:
        """A tool taking ``question`` (not ``query``) is filled under that name."""
        docs = ToolSpec(
            "handbook",
            "Answer questions from the employee handbook.",
            {"type": "object", "properties": {"question": {"type": "string"}}, "required": ["question"]},
        )
        plan = model.plan("How many days of parental leave do employees get?", [docs])
        assert plan.calls == (
            ToolCall("plan_0", "handbook", {"question": "How many days of parental leave do employees get"}),
        )

    def test_a_forced_tool_is_called(self, model: PlannerModel, tools: dict[str, Tool]) -> None:
        """``tool_choice`` naming a tool gets a call of that tool (the ``tools`` capability)."""
        completion = turn(
            model, [Message("user", "What does the refund policy say?")], specs(tools), tool_choice="search"
        )
        assert [c.name for c in completion.tool_calls] == ["search"]

    def test_tool_choice_none_calls_nothing(self, model: PlannerModel, tools: dict[str, Tool]) -> None:
        completion = turn(model, [Message("user", DEMO_TASK)], specs(tools), tool_choice="none")
        assert not completion.tool_calls and "switched off" in completion.text


class TestHonesty:
    def test_unknown_tool_shapes_are_not_called(self, model: PlannerModel) -> None:
        """A tool whose required arguments the rules cannot fill is never called; the answer says why."""
        odd = ToolSpec(
            "refund_ticket",
            "Refund one ticket.",
            {
                "type": "object",
                "properties": {"ticket_id": {"type": "integer"}, "amount": {"type": "number"}},
                "required": ["ticket_id", "amount"],
            },
        )
        assert tool_shape(odd).kind == "unknown"
        completion = asyncio.run(
            model.complete([Message("user", "Refund ticket 12")], ChatOptions(tools=(odd,)))
        )
        assert completion.finish_reason == "stop" and not completion.tool_calls
        assert "refund_ticket (required parameters ticket_id, amount)" in completion.text

    def test_no_tools_is_a_plain_answer(self, model: PlannerModel) -> None:
        completion = asyncio.run(model.complete([Message("user", "Who approves refunds?")]))
        assert not completion.tool_calls and "none was offered" in completion.text

    def test_a_date_it_cannot_read_is_refused_not_dropped(
        self, model: PlannerModel, tools: dict[str, Tool]
    ) -> None:
        """'last week' needs today's date: no count of every ticket stands in for it."""
        plan = model.plan("How many tickets did we get last week?", specs(tools))
        assert not plan.calls and "last week" in plan.steps[0].reason

    def test_a_mention_with_no_text_column_is_refused(self, model: PlannerModel) -> None:
        """No column could hold the words: a count of every row would answer another question."""
        numbers = ToolSpec(
            "db",
            "Tables: readings(id INTEGER, value REAL, status TEXT).",
            {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        )
        plan = model.plan("How many readings mention a frozen sensor?", [numbers])
        assert not plan.calls and plan.steps[0].reason == "could not write the arguments of db"

    def test_an_empty_task_is_said_to_be_empty(self, model: PlannerModel, tools: dict[str, Tool]) -> None:
        completion = turn(model, [Message("user", "  ")], specs(tools))
        assert completion.text == "I was given no task to work on." and not completion.tool_calls

    def test_arithmetic_without_a_calculator_is_not_guessed(
        self, model: PlannerModel, tools: dict[str, Tool]
    ) -> None:
        assert not model.plan("What is 25% of 3100?", specs(tools, "sql", "search")).calls


class TestAnswering:
    def test_the_demo_answer_cites_each_tool(self, model: PlannerModel, tools: dict[str, Tool]) -> None:
        """A count as a sentence, the policy quoted exactly from the passages, each with its tool's marker."""
        messages = [Message("user", DEMO_TASK)]
        calls = turn(model, messages, specs(tools)).tool_calls
        messages += run_calls(tools, calls)
        answer = turn(model, messages, specs(tools))
        assert answer.finish_reason == "stop" and not answer.tool_calls
        assert answer.text.startswith("9 open support tickets mention the refund policy. [tickets] ")
        quotes = [
            q.strip() for q in re.split(r"\[search\]", answer.text.split("[tickets]", 1)[1]) if q.strip()
        ]
        flat = " ".join(REFUND_PASSAGES.split())
        assert quotes and all(q in flat for q in quotes)
        assert not any("Client meals" in q for q in quotes)

    def test_results_are_read_without_tools_offered(
        self, model: PlannerModel, tools: dict[str, Tool]
    ) -> None:
        """The loop offers no tools once its call budget is spent: the answer still reads each result."""
        messages = [Message("user", DEMO_TASK)]
        messages += run_calls(tools, turn(model, messages, specs(tools)).tool_calls)
        answer = turn(model, messages, ())
        assert answer.text.startswith("9 open support tickets mention the refund policy. [tickets] ")
        assert "[search]" in answer.text

    def test_a_failed_tool_is_named_not_invented(self, model: PlannerModel, tools: dict[str, Tool]) -> None:
        messages = [
            Message("user", "How many tickets are pending?"),
            Message("assistant", "", tool_calls=(ToolCall("plan_0", "tickets", {"query": "SELECT 1"}),)),
            Message("tool", "Error: tool tickets: database is locked", tool_call_id="plan_0", name="tickets"),
        ]
        answer = turn(model, messages, specs(tools)).text
        assert "The tickets tool failed (Error: tool tickets: database is locked)" in answer
        assert not re.search(r"\d+ tickets are pending", answer)

    def test_rows_and_arithmetic(self, model: PlannerModel, tools: dict[str, Tool]) -> None:
        task = "List the open tickets from Copperline Brewing, and what is 25% of 3100?"
        messages = [Message("user", task)]
        messages += run_calls(tools, turn(model, messages, specs(tools)).tool_calls)
        answer = turn(model, messages, specs(tools)).text
        assert (
            "2 rows (id, subject) for “List the open tickets from Copperline Brewing”: 5, " in answer
            and "12, Refund still not received" in answer
        )
        assert "= 775. [calculator]" in answer

    @pytest.mark.parametrize(
        ("question", "n", "sentence"),
        [
            (
                "how many open tickets mention the refund policy?",
                1,
                "1 open ticket mentions the refund policy.",
            ),
            ("How many tickets are pending", 0, "No tickets are pending."),
            ("how many tickets are there?", 40, "There are 40 tickets."),
            (
                "How many tickets did Tahoe Solar open?",
                4,
                "The count for “How many tickets did Tahoe Solar open” is 4.",
            ),
        ],
    )
    def test_count_sentences(self, question: str, n: int, sentence: str) -> None:
        """A count is said with what was counted, in agreement with the number; else the question is quoted."""
        assert count_sentence(question, n) == sentence


class TestFeedback:
    def test_a_failed_sql_call_is_corrected(self, model: PlannerModel) -> None:
        """The database says a listed column does not exist: the call is made again without it."""
        stale = ToolSpec(
            "tickets",
            "Runs one read-only SQLite SELECT. Tables: tickets(id INTEGER, subject TEXT, status TEXT).",
            {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        )
        task = "List the pending tickets"
        first = model.plan(task, [stale]).calls
        assert (
            first[0].arguments["query"].startswith("SELECT id, subject FROM tickets WHERE status = 'pending'")
        )
        messages = [
            Message("user", task),
            Message("assistant", "", tool_calls=first),
            Message(
                "tool", "Error: tool tickets: no such column: subject", tool_call_id="plan_0", name="tickets"
            ),
            Message("assistant", "The tickets tool failed."),
            Message("user", "The check found: the answer does not list any ticket."),
        ]
        retry = turn(model, messages, (stale,))
        assert retry.tool_calls == (
            ToolCall(
                "plan_0_retry1",
                "tickets",
                {"query": "SELECT id FROM tickets WHERE status = 'pending' ORDER BY id LIMIT 50"},
            ),
        )

    def test_a_correction_that_would_drop_a_condition_is_refused(self, model: PlannerModel) -> None:
        """Without the column the condition needs, a count would answer another question: no retry."""
        spec = ToolSpec(
            "tickets",
            "Tables: tickets(id INTEGER, subject TEXT, status TEXT).",
            {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        )
        task = "How many tickets are pending?"
        calls = model.plan(task, [spec]).calls
        messages = [
            Message("user", task),
            Message("assistant", "", tool_calls=calls),
            Message(
                "tool", "Error: tool tickets: no such column: status", tool_call_id="plan_0", name="tickets"
            ),
            Message("assistant", "The tickets tool failed."),
            Message("user", "The check found: no count was given."),
        ]
        answer = turn(model, messages, (spec,))
        assert not answer.tool_calls
        assert answer.text == "The tickets tool failed. " + CANNOT_ADDRESS
        messages += [Message("assistant", answer.text), Message("user", "The check found: still no count.")]
        assert turn(model, messages, (spec,)).text == answer.text  # said once, not again and again

    def test_a_quoted_claim_is_dropped_from_the_draft(self, model: PlannerModel) -> None:
        messages = [
            Message("user", "What does the refund policy say?"),
            Message("assistant", "Refunds take 10 days. [search] Refunds are paid in cash. [search]"),
            Message("user", 'The check found: "Refunds are paid in cash." is not supported by any source.'),
        ]
        answer = turn(model, messages, ())
        assert answer.text == "Refunds take 10 days. [search]"


class TestLabelledSets:
    """The figures in the README come from bench/planner_accuracy.py over the same sets."""

    @pytest.mark.parametrize(
        ("name", "floor"), [("planner_tasks.jsonl", 0.9), ("planner_heldout.jsonl", 0.85)]
    )
    def test_accuracy_floor(
        self, model: PlannerModel, tools: dict[str, Tool], name: str, floor: float
    ) -> None:
        """Tool choice and arguments (SQL judged by its rows against a hand-written query) stay above a floor."""
        tasks = load_tasks(ROOT / "bench" / "data" / name)
        assert len(tasks) >= 20
        report = evaluate(model, tasks, tools, CONTEXT)
        print(name, report.summary())
        assert report.task_accuracy >= floor, [o.task for o in report.outcomes if not o.right]

    def test_the_evaluation_can_fail(self, model: PlannerModel, tools: dict[str, Tool]) -> None:
        """A wrong gold query is scored wrong: the floor above measures something."""
        task = {"task": "How many tickets are pending?", "calls": [{"tool": "sql", "gold": "SELECT 1 + 41"}]}
        assert evaluate(model, [task], tools, CONTEXT).task_accuracy == 0.0

    def test_the_phrase_rule_beats_the_key_term(
        self, remembering: RecentQueries, tools: dict[str, Tool]
    ) -> None:
        """Why a mention is matched as a whole phrase: the key-term variant miscounts on the set."""
        tasks = [
            t for t in load_tasks(ROOT / "bench" / "data" / "planner_tasks.jsonl") if "mention" in t["task"]
        ]
        phrase = evaluate(PlannerModel(remembering), tasks, tools, CONTEXT).task_accuracy
        head = evaluate(PlannerModel(remembering, rules=PlannerRules(mention="head")), tasks, tools, CONTEXT)
        assert phrase > head.task_accuracy


class TestProvider:
    def test_the_provider_builds_it(self, embedder: SentenceTransformerEmbedder) -> None:
        """``provider: planner`` in the spec is this model, with the shared embedder."""
        chat = build_model("agent", ModelSpec(provider="planner"), embedder=lambda: embedder)
        assert isinstance(chat, PlannerModel) and isinstance(chat, ChatModel)
        assert chat.name == "agent" and chat.capabilities.tools and not chat.capabilities.extractive


class TestConformance(ChatModelConformance):
    """Asked without tools, the planner says it cannot answer: still an answer, with usage."""

    @pytest.fixture
    def model(self, embedder: Any) -> ChatModel:
        return PlannerModel(embedder)

    @pytest.fixture
    def failing_model(self) -> ChatModel:
        pytest.skip("the planner has no upstream that could fail")
