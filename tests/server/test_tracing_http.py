"""With an exporter configured, a request yields one span per pipeline stage under its HTTP span."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.server.conftest import Api

from stanchion.tracing import use_tracer_provider


def test_answer_request_spans_nest_under_the_http_span(api: Api) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_tracer_provider(provider)
    try:
        with api.client(api.keys.ops) as c:
            r = c.post(
                "/v1/answer",
                json={"question": "How long do refunds take?"},
                headers={"x-request-id": "req-42"},
            )
        assert r.status_code == 200 and r.headers["x-request-id"] == "req-42"
    finally:
        use_tracer_provider(None)
        provider.shutdown()
    finished = exporter.get_finished_spans()
    spans = {s.name: s for s in finished}
    assert {"http.request", "retrieve", "generate", "verify"} <= set(spans)
    root = spans["http.request"]
    assert root.attributes is not None and root.attributes["request.id"] == "req-42"
    assert root.attributes["http.route"] == "/v1/answer" and root.attributes["http.status_code"] == 200
    by_id = {s.context.span_id: s for s in finished}
    for stage in ("retrieve", "generate", "verify"):
        ancestors, parent = [], spans[stage].parent
        while parent is not None:
            ancestors.append(parent.span_id)
            parent = by_id[parent.span_id].parent if parent.span_id in by_id else None
        assert root.context.span_id in ancestors, stage
