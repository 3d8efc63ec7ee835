"""OpenTelemetry spans around the pipeline stages, when an exporter is configured.

    configure_tracing("console")          # or "otlp" (OTEL_EXPORTER_OTLP_* variables), or "none"
    with span("retrieve", k=8, mode="hybrid") as current:
        hits = ...
        current.set_attribute("hits", len(hits))

With tracing off (the default, or ``"none"``) ``span`` returns one shared no-op context manager:
no OpenTelemetry call, no context switch, well under a microsecond. The SDK
(``opentelemetry-sdk``) and the OTLP exporter are imported only when asked for.
"""

from __future__ import annotations

import importlib
import sys
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from stanchion.errors import StanchionError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["Exporter", "configure_tracing", "span", "use_tracer_provider"]

Exporter = Literal["none", "console", "otlp"]

_INSTRUMENTATION = "stanchion"

# The tracer spans go to; None means tracing is off. Set only by configure_tracing and
# use_tracer_provider, once at start-up (tests reset it).
_tracer: trace.Tracer | None = None


class _NoSpan(AbstractContextManager[trace.Span]):
    """What ``span`` returns when tracing is off; yields a non-recording span."""

    __slots__ = ()

    def __enter__(self) -> trace.Span:
        return trace.INVALID_SPAN

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


_NO_SPAN = _NoSpan()


def span(name: str, **attributes: AttributeValue) -> AbstractContextManager[trace.Span]:
    """A span named ``name``, child of the current one, with ``attributes``; free when off."""
    tracer = _tracer
    if tracer is None:
        return _NO_SPAN
    return tracer.start_as_current_span(name, attributes=attributes)


def use_tracer_provider(provider: trace.TracerProvider | None) -> None:
    """Send ``span`` to ``provider`` (None: off). configure_tracing calls it; tests call it too."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer(_INSTRUMENTATION)


def configure_tracing(exporter: Exporter, service_name: str = "stanchion") -> SDKTracerProvider | None:
    """Start exporting spans; returns the SDK provider (call ``shutdown()`` on exit to flush).

    ``"none"`` turns tracing off. The provider also becomes OpenTelemetry's global one, so
    instrumentation libraries (FastAPI, httpx) export their spans beside ours.
    """
    if exporter == "none":
        use_tracer_provider(None)
        return None
    provider = _sdk_provider(_exporter(exporter), service_name)
    trace.set_tracer_provider(provider)
    use_tracer_provider(provider)
    return provider


def _exporter(kind: Exporter) -> SpanExporter:
    if kind == "console":
        try:
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        except ImportError as exc:
            raise _missing("opentelemetry-sdk") from exc
        return ConsoleSpanExporter(out=sys.stderr)
    if kind == "otlp":
        # Imported by name: the package is optional, so type checkers may not see it.
        try:
            otlp = importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
        except ImportError as exc:
            raise _missing("opentelemetry-exporter-otlp") from exc
        # It reads its endpoint, headers and timeout from the OTEL_EXPORTER_OTLP_* variables.
        exporter: SpanExporter = otlp.OTLPSpanExporter()
        return exporter
    raise StanchionError(f"unknown tracing exporter {kind!r}: use 'none', 'console' or 'otlp'")


def _sdk_provider(exporter: SpanExporter, service_name: str) -> SDKTracerProvider:
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise _missing("opentelemetry-sdk") from exc
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    # Batched: spans are exported on a background thread, never inside a request.
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _missing(package: str) -> StanchionError:
    return StanchionError(f"tracing needs the {package} package: pip install {package}")
