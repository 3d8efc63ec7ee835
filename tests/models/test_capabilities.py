"""Capabilities are declared on the ChatModel protocol, and wrappers derive theirs from what they wrap."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from stanchion.models.base import Capabilities, ChatModel
from stanchion.models.fallback import Attempt, FallbackModel
from stanchion.models.router import Router
from stanchion.testing.fake_chat import FakeChatModel

SRC = Path(__file__).resolve().parents[2] / "src" / "stanchion"
EXTRACTIVE = Capabilities(extractive=True, tools=False, json_mode=True)
GENERATIVE = Capabilities(tools=True, json_mode=True)


def fake(name: str, capabilities: Capabilities) -> FakeChatModel:
    return FakeChatModel(name, capabilities=capabilities)


class TestWrappersDeriveCapabilities:
    def test_a_chain_of_extractive_models_is_extractive(self) -> None:
        """A chain quotes its sources only when every link does; it makes pieces itself."""
        chain = FallbackModel([Attempt(fake("a", EXTRACTIVE)), Attempt(fake("b", EXTRACTIVE))])
        assert chain.capabilities == Capabilities(streams_pieces=True, extractive=True, json_mode=True)

    def test_one_generative_link_makes_the_chain_generative(self) -> None:
        """A chain can do only what every model in it can: any of them may answer."""
        chain = FallbackModel([Attempt(fake("a", EXTRACTIVE)), Attempt(fake("b", GENERATIVE))])
        assert chain.capabilities == Capabilities(streams_pieces=True, json_mode=True)

    def test_a_router_forwards_what_every_tier_can_do(self) -> None:
        """A router over chains keeps their fast path and their extractive answers."""
        tiers = {
            "small": FallbackModel([Attempt(fake("a", EXTRACTIVE))]),
            "large": FallbackModel([Attempt(fake("b", EXTRACTIVE))]),
        }
        assert Router(tiers).capabilities == Capabilities(
            streams_pieces=True, extractive=True, json_mode=True
        )

    def test_a_router_over_plain_models_makes_no_pieces(self) -> None:
        """A router hands on its tier's pieces; over models that make none, it declares none."""
        router = Router({"small": fake("a", GENERATIVE), "large": fake("b", GENERATIVE)})
        assert router.capabilities == GENERATIVE
        assert isinstance(router, ChatModel)


class TestNoGuessing:
    @pytest.mark.parametrize("member", ["extractive", "stream_pieces", "aclose", "capabilities"])
    def test_no_getattr_on_a_capability(self, member: str) -> None:
        """No module finds a model's optional member with getattr: it is declared on the protocol."""
        found = []
        for path in SRC.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr")
                    and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value == member
                ):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}")
        assert not found, f"getattr/hasattr of {member!r} at {found}"
