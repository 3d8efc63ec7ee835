"""``stanchion ask``, ``stanchion chat`` and ``stanchion eval answers``: parse -> call -> render.

``register(app, eval_app)`` adds the commands to the Typer apps of ``stanchion.cli``. Exit codes
follow the CLI's: 0 success, 1 the model failed (``ModelError``), 2 usage or spec error.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from stanchion.cli.common import JsonOption, SpecOption, empty_index_hint, err, fail, load_app, operator, out
from stanchion.cli.render import IngestProgressBar
from stanchion.core.filters import build_filter
from stanchion.errors import StanchionError
from stanchion.spec import load_spec

if TYPE_CHECKING:  # the answer pipeline is imported by the commands that answer, not by every command
    from stanchion.answer import Answer, Answerer, AnswerEvent
    from stanchion.pipeline import Call, Pipeline, RequestContext

__all__ = ["register"]


RouteOption = Annotated[
    str | None, typer.Option("--route", "-r", help="Model route from the spec (default: answer.route).")
]
KOption = Annotated[
    int | None, typer.Option("--k", "-k", help="Sources given to the model (default: answer.k).", min=1)
]
HISTORY_TURNS = 3  # chat turns (question and answer) sent back to the model


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add ``ask`` and ``chat`` to ``app`` and ``answers`` to ``eval_app``."""
    app.command("ask")(ask)
    app.command("chat")(chat)
    eval_app.command("answers")(eval_answers)


def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    route: RouteOption = None,
    k: KOption = None,
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", "-f", help="Metadata filter, as in `stanchion search` (repeatable)."),
    ] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="Ask as a caller in these access groups.")
    ] = None,
    spec: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Answer a question from the index, citing the sources of every sentence."""
    from stanchion.pipeline import Call, local_context, wiring
    from stanchion.types import Message

    stanchion = load_app(spec)
    try:
        answerer = stanchion.answerer(route)
        where = build_filter(filters or [], groups=group)
        context = local_context(user=operator(), route=route or stanchion.spec.answer.route, groups=group)
        call = Call(context, "ask", query=question, stream=not as_json, inputs=(Message("user", question),))
        answer = asyncio.run(_answer(wiring.pipeline_for(stanchion), call, answerer, where=where, k=k))
        if as_json:
            hint = "" if answer.citations else empty_index_hint(stanchion)
            print(json.dumps({**answer.as_json(), **({"hint": hint} if hint else {})}))
        else:
            if not answer.citations and (hint := empty_index_hint(stanchion)):
                err.print(f"[yellow]hint:[/] {escape(hint)}", highlight=False)
    except StanchionError as exc:
        raise fail(exc) from None
    finally:
        stanchion.close()


def chat(route: RouteOption = None, k: KOption = None, spec: SpecOption = None) -> None:
    """Ask questions in a loop; follow-ups are searched together with the previous question.

    Type ``exit`` (or end the input) to leave.
    """
    from stanchion.pipeline import local_context, wiring

    stanchion = load_app(spec)
    try:
        answerer = stanchion.answerer(route)
        context = local_context(user=operator(), route=route or stanchion.spec.answer.route)
        asyncio.run(_chat(wiring.pipeline_for(stanchion), context, answerer, k))
    except StanchionError as exc:
        raise fail(exc) from None
    finally:
        stanchion.close()


async def _chat(pipeline: Pipeline, context: RequestContext, answerer: Answerer, k: int | None) -> None:
    from stanchion.core.analyze import contextual_query
    from stanchion.pipeline import Call
    from stanchion.types import Message

    history: list[Message] = []
    previous = ""
    while True:
        try:
            question = (await asyncio.to_thread(input, "you> ")).strip()
        except EOFError:
            break
        if question.lower() in ("exit", "quit"):
            break
        if not question:
            continue
        query = contextual_query(previous, question)
        call = Call(context, "chat", query=question, stream=True, inputs=(Message("user", question),))
        answer = await _answer(
            pipeline, call, answerer, k=k, history=history[-2 * HISTORY_TURNS :], search_query=query
        )
        history += [Message("user", question), Message("assistant", answer.text)]
        previous = question
        out.print()


async def _answer(pipeline: Pipeline, call: Call, answerer: Answerer, **ask: Any) -> Answer:
    """The answer to the call's question (its one input, as the input guards left it: the
    audit's ``call.query`` is masked when PII is guarded) through the request pipeline: streamed
    to the terminal as it is verified when ``call.stream``, else in one piece."""

    def question() -> str:
        return call.inputs[0].content if call.inputs else call.query

    async def retrieve(call: Call) -> None:
        call.retrieved = await answerer.retrieve(question(), context=call.context, **ask)

    async def generate(call: Call) -> None:
        if call.stream:
            call.events = answerer.stream(question(), context=call.context, retrieved=call.retrieved, **ask)
        else:
            call.result = await answerer.answer(
                question(), context=call.context, retrieved=call.retrieved, **ask
            )
            call.outcome.take_answer(call.result)

    await pipeline.start(call, retrieve=retrieve, generate=generate)
    try:
        if call.stream:
            assert call.events is not None
            call.result = await _stream_answer(call.events)
            call.outcome.take_answer(call.result)
    except Exception as exc:
        pipeline.fail(call, exc)
        raise
    finally:
        await pipeline.close(call)
    answer: Answer = call.result
    return answer


async def _stream_answer(events: AsyncIterator[AnswerEvent]) -> Answer:
    final: Answer | None = None
    async for event in events:
        if event.answer is not None:
            final = event.answer
        elif event.text:
            out.print(escape(event.text), end="", highlight=False)
    out.print()
    if final is None:  # the stream always ends with the Answer; this guards a broken Answerer
        raise StanchionError("the answer stream ended without an answer")
    _render_sources(final)
    return final


def _render_sources(answer: Answer) -> None:
    for c in answer.citations:
        where = c.path + (f" p.{c.page}" if c.page is not None else "")
        out.print(f"  [bold][{c.number}][/] {escape(c.title or c.document_id)} [dim]{escape(where)}[/]")
        out.print(f"      [dim]{escape(c.snippet)}[/]", highlight=False)
    tokens = answer.usage.input_tokens + answer.usage.output_tokens
    note = " (abstained)" if answer.abstained else ""
    dropped = f", {len(answer.unsupported)} unsupported sentence(s) dropped" if answer.unsupported else ""
    out.print(
        f"[dim]{escape(answer.model)}{note}: {tokens} tokens, ${answer.cost_usd:.4f}, "
        f"{answer.latency_ms.get('total', 0.0):.0f} ms{dropped}[/]"
    )


def eval_answers(
    dataset: Annotated[
        Path, typer.Option("--dataset", "-d", help="SQuAD-layout JSON: articles with questions and answers.")
    ],
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", help="Ask N questions spread over the file.", min=1)
    ] = None,
    route: RouteOption = None,
    spec: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Retrieval hit rate, gold answer in the answer, citation precision, abstention and latency."""
    from stanchion.evals.answers import SquadDataset, run_answers_eval

    try:
        base = load_spec(spec)
        data = SquadDataset.load(dataset)
        total = len(data.sample(limit))
        with IngestProgressBar(err, enabled=err.is_terminal, queries=total) as bar:
            report = run_answers_eval(
                data, base, limit=limit, route=route, progress=bar, on_question=bar.query_done
            )
    except StanchionError as exc:
        raise fail(exc) from None
    if as_json:
        print(json.dumps(report.as_json()))
        return
    table = Table(title=f"{dataset.name}: answers", show_header=False)
    for name, value in report.as_json().items():
        shown = ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else value
        table.add_row(name, str(shown))
    out.print(table)
