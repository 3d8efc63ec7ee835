"""Build ChatModels and routes from the spec: providers, fallback chains, tiered routers."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from stanchion.core import plugins
from stanchion.core.embed import Embedder
from stanchion.errors import SpecError
from stanchion.models.base import ChatModel
from stanchion.models.fallback import Attempt, BreakerRegistry, FallbackModel
from stanchion.models.router import Router
from stanchion.spec import ModelSpec, RouteSpec, Spec

if TYPE_CHECKING:
    from stanchion.models.providers import ProviderFactory


def build_model(name: str, spec: ModelSpec, *, embedder: Callable[[], Embedder]) -> ChatModel:
    """One provider adapter, built by the factory registered under ``spec.provider`` (entry point
    group ``stanchion.providers``; the built-ins are in ``providers.py``). ``embedder`` is called
    only by a provider that needs it (the extractive model)."""
    try:
        factory = cast("ProviderFactory", plugins.load(plugins.PROVIDERS, spec.provider))
    except plugins.PluginNotFound as exc:
        raise SpecError(
            f"models.{name}.provider: unknown provider {spec.provider!r} "
            f"({plugins.registered_text(exc.registered)})",
            key_path=f"models.{name}.provider",
        ) from None
    model = factory(name, spec, embedder=embedder)
    if not isinstance(model, ChatModel):
        raise SpecError(
            f"models.{name}.provider: provider {spec.provider!r} built {type(model).__name__}, "
            "which is not a ChatModel",
            key_path=f"models.{name}.provider",
        )
    return model


# What the composition root may put around each provider model as it is built (the PII guard's
# masking): ``wrap(name, spec, model)``. Wrapped at the leaf, below fallback and routing, so each
# model of a chain is wrapped or not by its own kind (a local model may be exempt).
LeafWrapper = Callable[[str, ModelSpec, ChatModel], ChatModel]


class ModelRegistry:
    """Builds each model once and shares one circuit-breaker registry, so a model has one health
    state. ``wrap`` is applied to every provider model as it is built."""

    def __init__(
        self, spec: Spec, *, embedder: Callable[[], Embedder], wrap: LeafWrapper | None = None
    ) -> None:
        self._spec = spec
        self._embedder = embedder
        self._wrap = wrap
        self._models: dict[str, ChatModel] = {}
        self._routes: dict[str, ChatModel] = {}
        self.breakers = BreakerRegistry()

    def model(self, name: str) -> ChatModel:
        if name not in self._models:
            if name not in self._spec.models:
                raise SpecError(
                    f"no model named {name!r} (models: {', '.join(self._spec.models)})", key_path="models"
                )
            model = build_model(name, self._spec.models[name], embedder=self._embedder)
            if self._wrap is not None:
                model = self._wrap(name, self._spec.models[name], model)
            self._models[name] = model
        return self._models[name]

    def route(self, name: str) -> ChatModel:
        if name not in self._routes:
            if name not in self._spec.routes:
                raise SpecError(
                    f"no route named {name!r} (routes: {', '.join(self._spec.routes)})", key_path="routes"
                )
            self._routes[name] = self._build_route(self._spec.routes[name])
        return self._routes[name]

    def _chain(self, names: list[str]) -> FallbackModel:
        attempts = [
            Attempt(
                self.model(n),
                timeout_s=self._spec.models[n].timeout_s,
                max_retries=self._spec.models[n].max_retries,
            )
            for n in names
        ]
        return FallbackModel(attempts, breakers=self.breakers)

    def _build_route(self, route: RouteSpec) -> ChatModel:
        if route.models:
            return self._chain(route.models)
        return Router(
            {tier: self._chain(chain) for tier, chain in route.tiers.items()},
            prices={tier: self._spec.models[chain[0]].price for tier, chain in route.tiers.items()},
            rules=route.rules,
            max_cost_usd=route.max_cost_usd,
            max_latency_ms=route.max_latency_ms,
            default_max_tokens=max(self._spec.models[c[0]].max_output_tokens for c in route.tiers.values()),
        )

    def primary_spec(self, route_name: str) -> ModelSpec:
        """The spec of the model a route tries first (its cheapest tier's primary for routers)."""
        route = self._spec.routes[route_name]
        first = route.models[0] if route.models else next(iter(route.tiers.values()))[0]
        return self._spec.models[first]

    async def aclose(self) -> None:
        for model in self._models.values():
            await model.aclose()
