"""Tracing: spans nest and carry attributes when on; nothing is recorded, nearly free, when off."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stanchion.errors import StanchionError
from stanchion.tracing import configure_tracing, span, use_tracer_provider


@pytest.fixture(autouse=True)
def _tracing_off_after() -> Iterator[None]:
    yield
    use_tracer_provider(None)


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Spans go to memory, synchronously."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_tracer_provider(provider)
    yield exporter
    provider.shutdown()


class TestSpans:
    def test_spans_nest_and_carry_attributes(self, exported: InMemorySpanExporter) -> None:
        """Stage spans are children of the request span, with the attributes given."""
        with span("answer", route="default"):
            with span("retrieve", k=8, mode="hybrid") as current:
                current.set_attribute("hits", 5)
            with span("generate", model="local"):
                pass
        spans = {s.name: s for s in exported.get_finished_spans()}
        assert set(spans) == {"answer", "retrieve", "generate"}
        root = spans["answer"]
        assert root.parent is None
        for child in ("retrieve", "generate"):
            parent = spans[child].parent
            assert parent is not None and parent.span_id == root.context.span_id
            assert spans[child].context.trace_id == root.context.trace_id
        assert dict(spans["retrieve"].attributes or {}) == {"k": 8, "mode": "hybrid", "hits": 5}
        assert dict(root.attributes or {}) == {"route": "default"}

    def test_exception_marks_span_error(self, exported: InMemorySpanExporter) -> None:
        """An exception leaving a span sets its status to error and still propagates."""
        with pytest.raises(ValueError), span("verify"):
            raise ValueError("boom")
        (finished,) = exported.get_finished_spans()
        assert finished.status.status_code == trace.StatusCode.ERROR


class TestOff:
    def test_off_records_nothing(self, exported: InMemorySpanExporter) -> None:
        """After configure_tracing('none') spans reach no exporter and yield a non-recording span."""
        assert configure_tracing("none") is None
        with span("retrieve", k=8) as current:
            current.set_attribute("hits", 5)  # harmless when off
            assert not current.is_recording()
        assert exported.get_finished_spans() == ()

    def test_off_is_nearly_free(self) -> None:
        """Off, every span is one shared no-op context: nothing is allocated or looked up per call."""
        first, second = span("retrieve", k=8), span("rerank", candidates=50)
        assert first is second
        with first as current:
            assert not current.is_recording()


class TestConfigure:
    def test_console_exports_to_stderr(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The console exporter writes finished spans as JSON to stderr, with the service name."""
        provider = configure_tracing("console", service_name="stanchion-test")
        assert provider is not None
        with span("rerank", candidates=50):
            pass
        provider.force_flush()
        provider.shutdown()
        err = capsys.readouterr().err
        exported = json.loads(err)
        assert exported["name"] == "rerank"
        assert exported["attributes"] == {"candidates": 50}
        assert exported["resource"]["attributes"]["service.name"] == "stanchion-test"

    def test_otlp_without_package_says_what_to_install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A missing OTLP exporter is a StanchionError naming the pip package."""
        # None in sys.modules makes the import fail even where the package is installed.
        monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
        with pytest.raises(StanchionError, match="pip install opentelemetry-exporter-otlp"):
            configure_tracing("otlp")
