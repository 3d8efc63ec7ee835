"""One agent run end to end on the real local model (SmolLM2-135M through llama.cpp): its first
step is a constrained tool call of the calculator, the tool runs, its result goes back, and the
run ends with a stop reason."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from stanchion.agents import Agent, AgentParts
from stanchion.errors import ModelError
from stanchion.request_context import RequestContext
from stanchion.spec import AgentSpec
from stanchion.tools.calculator import build as build_calculator

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: pip install 'stanchion[local]'")

from stanchion.models.llamacpp import LlamaCppModel, packaged_smollm2_path


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaCppModel]:
    try:
        packaged_smollm2_path()
    except ModelError as exc:
        pytest.skip(f"packaged SmolLM2 not installed: {exc}")
    chat = LlamaCppModel("smollm2", n_ctx=1024, n_threads=1)  # one thread: the suite shares the CPUs
    chat.warm_up()
    yield chat
    chat.close()


def test_a_real_local_model_calls_a_tool_through_the_loop(model: LlamaCppModel) -> None:
    calc = build_calculator("calc", {}, retriever=lambda: None)  # type: ignore[arg-type,return-value]
    spec = AgentSpec(
        instructions="You compute with the calc tool.",
        tools=["calc"],
        first_step="tool",
        check=False,
        limits={"max_steps": 2, "max_seconds": 300},
    )
    parts = AgentParts(model=model, tools=[calc.spec], call_tool=lambda n, a, c: calc.call(a, c), prices={})
    run = asyncio.run(Agent("maths", spec, parts).run("What is 12 * 7?", RequestContext("default", "t")))
    assert run.tool_calls, run.as_json()
    first = run.tool_calls[0]
    assert first.step == 1 and first.name == "calc"  # constrained: a call of the one tool offered
    assert set(first.arguments) <= {"expression"}
    assert first.ok or first.error.startswith("tool calc:")  # ran, or refused with a readable error
    assert run.stop_reason in ("answered", "max_steps"), run.as_json()
