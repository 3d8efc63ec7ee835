"""Providers are found by entry point (group ``stanchion.providers``), built-in or from another package.

A provider from another package is installed for real: a module and a ``*.dist-info`` with its
``entry_points.txt`` in a temporary folder on ``sys.path``, as pip would lay them out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.plugin_packages import installed_package

from stanchion.core import plugins
from stanchion.core.embed import Embedder
from stanchion.errors import SpecError
from stanchion.models.base import ChatModel
from stanchion.models.registry import ModelRegistry, build_model
from stanchion.spec import ModelSpec, RouteSpec, Spec, parse_spec

BUILT_IN = {"openai", "anthropic", "llamacpp", "extractive"}

PROVIDER_MODULE = """
from stanchion.testing.fake_chat import FakeChatModel


def build(name, spec, *, embedder):
    return FakeChatModel(name, default=f"echo of {spec.model}")


def broken(name, spec, *, embedder):
    return object()
"""


def no_embedder() -> Embedder:
    raise AssertionError("only the extractive provider asks for the embedder")


@pytest.fixture
def echo_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An installed package ``stanchion-echo`` registering the providers ``echo`` and ``broken``."""
    entry_points = "[stanchion.providers]\necho = stanchion_echo_provider:build\nbroken = stanchion_echo_provider:broken\n"
    with installed_package(
        tmp_path / "site-packages",
        monkeypatch,
        name="stanchion-echo",
        module="stanchion_echo_provider",
        source=PROVIDER_MODULE,
        entry_points=entry_points,
    ) as site:
        yield site


class TestBuiltIns:
    def test_built_in_providers_are_registered_by_entry_point(self) -> None:
        """Stanchion's own pyproject registers its four providers like any other package would."""
        assert set(plugins.names(plugins.PROVIDERS)) >= BUILT_IN

    @pytest.mark.parametrize("provider", ["openai", "anthropic"])
    def test_a_built_in_provider_builds_its_adapter(self, provider: str) -> None:
        """The registered factory builds the adapter with the spec's settings, importing it only then."""
        model = build_model(
            "remote",
            ModelSpec(provider=provider, model="m", base_url="http://127.0.0.1:1/v1"),
            embedder=no_embedder,
        )
        assert isinstance(model, ChatModel) and model.name == "remote"


class TestPluginProvider:
    def test_a_spec_names_a_provider_another_package_registers(self, echo_package: Path) -> None:
        """The spec accepts the new name, and a route over it answers through the plugin's model."""
        spec = Spec(
            models={"mine": ModelSpec(provider="echo", model="tiny")},
            routes={"default": RouteSpec(models=["mine"])},
            base_dir=echo_package,
        )
        registry = ModelRegistry(spec, embedder=no_embedder)
        completion = asyncio.run(registry.route("default").complete([]))
        assert completion.text == "echo of tiny" and completion.model == "mine"
        assert "echo" in plugins.names(plugins.PROVIDERS)

    def test_a_provider_that_builds_no_chat_model_is_a_spec_error(self, echo_package: Path) -> None:
        """A plugin returning something else fails when the model is built, naming the provider."""
        with pytest.raises(
            SpecError, match="provider 'broken' built object, which is not a ChatModel"
        ) as info:
            build_model("bad", ModelSpec(provider="broken"), embedder=no_embedder)
        assert info.value.key_path == "models.bad.provider"

    def test_without_the_package_the_name_is_unknown(self) -> None:
        """Nothing named echo is registered unless its package is installed."""
        assert "echo" not in plugins.names(plugins.PROVIDERS)


class TestUnknownProvider:
    def test_the_spec_error_lists_the_registered_providers(self) -> None:
        """A misspelt provider is a spec error at its key path that lists every registered name."""
        with pytest.raises(SpecError) as info:
            parse_spec({"models": {"gpt": {"provider": "opneai"}}})
        assert info.value.key_path == "models.gpt.provider"
        assert str(info.value).startswith("models.gpt.provider: unknown provider 'opneai' (registered: ")
        assert all(name in str(info.value) for name in BUILT_IN)

    def test_the_registry_refuses_a_provider_nobody_registers(self) -> None:
        """A ModelSpec built in code skips the check only until the model is built."""
        spec = ModelSpec.model_construct(provider="nowhere")
        with pytest.raises(
            SpecError, match=r"models\.x\.provider: unknown provider 'nowhere' \(registered: "
        ):
            build_model("x", spec, embedder=no_embedder)

    def test_plugin_not_found_carries_the_registered_names(self) -> None:
        """The lookup error says what is registered, as attributes and in words."""
        with pytest.raises(plugins.PluginNotFound) as info:
            plugins.load(plugins.PROVIDERS, "nowhere")
        assert set(info.value.registered) >= BUILT_IN and info.value.name == "nowhere"
