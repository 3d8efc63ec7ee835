"""Fuzz every operation of the HTTP API from its own OpenAPI schema, over real loopback HTTP.

Schemathesis reads the served ``/openapi.json`` and generates requests for each operation, valid
ones and ones that break the schema, and checks every response with all its default checks: never
a 500, only documented status codes, content types and headers, bodies that match the declared
schema, valid requests accepted, invalid ones rejected, and authentication enforced. The requests go
through uvicorn and the middleware (request ids, body limits) as a client's would.

``schemathesis.pytest.from_fixture`` needs ``Item._nodeid``, which pytest 9.2 removed, so each
operation runs as a subtest of one test, built from schemathesis' public strategies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, BaseSchema, Case, GenerationMode
from schemathesis.core.result import Err
from tests.server.conftest import Api, ingest_and_keys, make_spec, write_corpus

from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.server.app import create_app
from stanchion.server.schemas import UserMessageIn
from stanchion.testing.live_server import LiveServer

# Limits so high that the fuzzer's burst never meets a 429 (which the schema declares anyway).
_SERVER = {"rate_limits": {"requests_per_minute": 1_000_000, "tokens_per_minute": 1_000_000_000}}
# Derandomized and without an example database, so CI sends the same requests on every run.
_SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, database=None)
_NO_KEY_SETTINGS = settings(_SETTINGS, max_examples=5)
# Invalid headers the fuzzer makes up are sent, except these: uvicorn answers a request it cannot
# frame (`Content-Length: v8`) with a text/plain 400 of its own before the application sees it.
_FRAMING_HEADERS = {"content-length", "transfer-encoding", "host"}

Operation = APIOperation[Any, Any, Any, Any]
AnyCase = Case[Any]


@pytest.fixture(scope="module")
def fuzz_api(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder
) -> Iterator[Api]:
    """One live server for the module: the fuzzer's uploads and deletes touch only its own corpus."""
    root: Path = tmp_path_factory.mktemp("fuzz")
    write_corpus(root)
    spec = make_spec(root, server=_SERVER)
    keys = ingest_and_keys(spec, embedder)
    with LiveServer(create_app(spec, embedder=embedder)) as url:
        yield Api(url, keys, spec)


@pytest.fixture(scope="module")
def openapi(fuzz_api: Api) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzz_api.url}/openapi.json")


@pytest.fixture(scope="module")
def known_ids(fuzz_api: Api) -> dict[str, str]:
    """Path parameters that exist: random ids only ever find nothing (404)."""
    with fuzz_api.client(fuzz_api.keys.admin) as client:
        r = client.post("/v1/documents", json={"filename": "fuzz.md", "text": "# Fuzz\n\nA document."})
    assert r.status_code == 202, r.text
    return {"document_id": "acme-public:refunds.md", "job_id": r.json()["id"]}


def _operations(schema: BaseSchema) -> list[Operation]:
    """Every operation; one whose definition schemathesis cannot read fails the test."""
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operations.append(result.ok())
    assert operations
    return operations


def _has_inputs(operation: Operation) -> bool:
    return bool(operation.body or operation.path_parameters or operation.query or operation.headers)


def _needs_key(operation: Operation) -> bool:
    return bool(operation.definition.raw.get("security"))


def _excluded_checks(case: AnyCase) -> list[Callable[..., Any]]:
    """The checks that cannot hold for this request, each with the reason."""
    excluded: list[Callable[..., Any]] = []
    if any(isinstance(value, list | dict) for value in (case.query or {}).values()):
        # A list or object for a one-valued parameter goes out as `?source=a&source=b`; FastAPI reads
        # the last value instead of rejecting the request, which is harmless. Other invalid query
        # values are still checked for rejection.
        excluded.append(schemathesis.checks.negative_data_rejection)
    body: Any = case.body
    if isinstance(body, dict) and not isinstance(body.get("access_groups", ""), str):
        # A multipart form field is text whatever the fuzzer meant: an object sent as `access_groups`
        # arrives as the string of its JSON, a valid (if odd) comma-separated list of groups.
        excluded.append(schemathesis.checks.negative_data_rejection)
    return excluded


def _on_embedding_model(case: AnyCase) -> AnyCase:
    body: Any = case.body
    if isinstance(body, dict):
        body["model"] = "all-MiniLM-L6-v2"
        if body.get("dimensions") is not None:
            body["dimensions"] = 384
    return case


def _on_default_route(case: AnyCase) -> AnyCase:
    """Name the spec's route, a grounded one, which needs a last user message with text (else 422)."""
    body: Any = case.body
    if isinstance(body, dict):
        body["model"] = "default"
        # Grounded routes refuse tools with a documented 422; tool calling is for gateway routes.
        body.pop("tools", None)
        body.pop("tool_choice", None)
        messages = body["messages"]
        users = [UserMessageIn.model_validate(m) for m in messages if m.get("role") == "user"]
        if not users or not users[-1].text().strip():
            question = {"role": "user", "content": "How long do refunds take?"}
            messages[-1:] = [messages[-1], question] if len(messages) < 256 else [question]
    return case


def _cases(operation: Operation, mode: GenerationMode, known: dict[str, str]) -> st.SearchStrategy[AnyCase]:
    """Schemathesis' cases, and for valid ones also cases that reach the handler's successful path."""
    generated = operation.as_strategy(generation_mode=mode)
    if mode is GenerationMode.NEGATIVE:
        return generated
    if operation.label == "POST /v1/chat/completions":
        # A made-up `model` names no route (404): use the spec's, so that completions run and stream.
        return generated.map(_on_default_route)
    if operation.label == "POST /v1/embeddings":
        # Likewise a made-up embedding model (404): half name the spec's, and its own dimension or none.
        return st.one_of(generated, generated.map(_on_embedding_model))
    real = {p.name: known[p.name] for p in operation.path_parameters if p.name in known}
    if real:
        # Half made-up ids (404), half ids that exist (200: the success body is checked too; the
        # first DELETE removes its document, so later ones are 404 again).
        return st.one_of(generated, operation.as_strategy(generation_mode=mode, path_parameters=real))
    return generated


def _fuzz(
    operation: Operation,
    mode: GenerationMode,
    headers: dict[str, str],
    checks: settings,
    known: dict[str, str],
) -> list[int]:
    statuses: list[int] = []

    @checks
    @given(case=_cases(operation, mode, known))
    def run(case: AnyCase) -> None:
        if case.headers:
            for name in [name for name in case.headers if name.lower() in _FRAMING_HEADERS]:
                del case.headers[name]
        response = case.call_and_validate(headers=headers, excluded_checks=_excluded_checks(case), timeout=60)
        statuses.append(response.status_code)

    run()
    return statuses


class TestFuzz:
    def test_every_operation_conforms_with_an_admin_key(
        self, fuzz_api: Api, openapi: BaseSchema, known_ids: dict[str, str], subtests: pytest.Subtests
    ) -> None:
        """Valid and invalid requests with an admin key: no 500s, every response as documented."""
        headers = {"Authorization": f"Bearer {fuzz_api.keys.admin}"}
        for operation in _operations(openapi):
            for mode in GenerationMode:
                if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
                    continue  # nothing to make invalid: no body, parameters or headers
                with subtests.test(operation=operation.label, mode=mode.value):
                    _fuzz(operation, mode, headers, _SETTINGS, known_ids)

    def test_without_a_key_every_operation_is_401_or_public(
        self, openapi: BaseSchema, known_ids: dict[str, str], subtests: pytest.Subtests
    ) -> None:
        """Valid requests without an API key: a documented 401 wherever the schema asks for one."""
        for operation in _operations(openapi):
            with subtests.test(operation=operation.label):
                statuses = _fuzz(operation, GenerationMode.POSITIVE, {}, _NO_KEY_SETTINGS, known_ids)
                if _needs_key(operation):
                    assert set(statuses) == {401}, statuses
                else:
                    assert all(status < 400 for status in statuses), statuses
