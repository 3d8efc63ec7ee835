"""The HTTP API end to end over loopback: auth, tenancy, access groups, errors, audit."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from tests.server.conftest import Api, ServerFactory

from stanchion.server.schemas import ChatCompletionChunk
from stanchion.spec import AnswerSpec

NITROGEN = "What is the boiling point of liquid nitrogen?"  # nothing in the corpus answers it


def _search(api: Api, key: str, query: str) -> list[str]:
    with api.client(key) as c:
        r = c.post("/v1/search", json={"query": query, "k": 10})
    assert r.status_code == 200, r.text
    return [h["text"] for h in r.json()["hits"]]


def _stream_text(response: httpx.Response) -> tuple[str, list[dict[str, object]]]:
    """The streamed text and chunks; every chunk must be what the OpenAPI schema says it is."""
    text, chunks = "", []
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunk = json.loads(line[6:])
            ChatCompletionChunk.model_validate(chunk)  # no field missing, none undocumented
            chunks.append(chunk)
            for choice in chunk.get("choices", []):
                text += choice["delta"].get("content") or ""
    return text, chunks


def _stream_chat(
    client: httpx.Client, question: str, **extra: object
) -> tuple[httpx.Response, str, list[dict[str, object]]]:
    """A streamed grounded answer: the response (read), its text and its chunks."""
    body = {"model": "default", "stream": True, "messages": [{"role": "user", "content": question}], **extra}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        text, chunks = _stream_text(r)
    return r, text, chunks


def test_missing_and_wrong_keys_are_401_with_stable_codes(api: Api) -> None:
    with api.client(None) as c:
        r = c.post("/v1/search", json={"query": "refund"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    with api.client("sk-stn-not-a-key") as c:
        r = c.post("/v1/search", json={"query": "refund"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_tenants_never_see_each_other(api: Api) -> None:
    assert any("zebra-42" in t for t in _search(api, api.keys.globex, "launch code"))
    assert not any("zebra" in t for t in _search(api, api.keys.admin, "Globex launch code zebra-42"))
    assert not any("Acme" in t for t in _search(api, api.keys.globex, "Acme refunds orders"))


def test_access_groups_filter_inside_a_tenant(api: Api) -> None:
    assert not any("4.2 million" in t for t in _search(api, api.keys.ops, "Q3 marketing budget"))
    assert any("4.2 million" in t for t in _search(api, api.keys.finance, "Q3 marketing budget"))
    assert any("4.2 million" in t for t in _search(api, api.keys.admin, "Q3 marketing budget"))


def test_grounded_chat_completion_cites_only_visible_sources(api: Api) -> None:
    with api.client(api.keys.ops) as c:
        r = c.post(
            "/v1/chat/completions",
            json={"model": "default", "messages": [{"role": "user", "content": "How long do refunds take?"}]},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "chat.completion" and body["model"] == "default"
        assert "five business days" in body["choices"][0]["message"]["content"]
        assert body["citations"] and all(
            c["document_id"].startswith("acme-public") for c in body["citations"]
        )
        assert body["usage"]["total_tokens"] >= 0
        # A question about another tenant's or another group's text finds nothing to cite.
        for question in ("What is the Globex launch code?", "What is the Q3 marketing budget?"):
            r = c.post(
                "/v1/chat/completions",
                json={"model": "default", "messages": [{"role": "user", "content": question}]},
            )
            content = r.json()["choices"][0]["message"]["content"]
            assert "zebra" not in content and "4.2" not in content
            assert all(
                not c["document_id"].startswith(("globex", "acme-finance")) for c in r.json()["citations"]
            )


def test_grounded_streaming_keeps_tenants_apart(api: Api) -> None:
    with api.client(api.keys.globex) as c:
        r, text, chunks = _stream_chat(c, "When is the launch date?", stream_options={"include_usage": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert "12 March" in text and "Acme" not in text
    final = next(ch for ch in chunks if ch.get("choices") and ch["choices"][0]["finish_reason"] == "stop")
    assert all(c["document_id"].startswith("globex") for c in final["citations"])  # type: ignore[union-attr]
    assert "usage" in chunks[-1] and chunks[-1]["choices"] == []
    with api.client(api.keys.ops) as c:
        _, text, _ = _stream_chat(c, "Globex launch code zebra")
    assert "zebra" not in text


def test_answer_endpoint(api: Api) -> None:
    with api.client(api.keys.finance) as c:
        r = c.post("/v1/answer", json={"question": "What is the Q3 marketing budget?"})
    assert r.status_code == 200, r.text
    assert "4.2 million" in r.json()["answer"] and r.json()["citations"]


def test_abstention_is_a_field_of_every_grounded_answer(api: Api) -> None:
    """`abstained` is false on an answer and true on an abstention: in /v1/answer, in a grounded chat
    completion's `stanchion` object, and on the finishing chunk of a grounded stream."""
    for question, abstained in (("How long do refunds take?", False), (NITROGEN, True)):
        with api.client(api.keys.ops) as c:
            body = c.post("/v1/answer", json={"question": question}).json()
            assert body["abstained"] is abstained and bool(body["citations"]) is not abstained
            chat = c.post(
                "/v1/chat/completions",
                json={"model": "default", "messages": [{"role": "user", "content": question}]},
            ).json()
            assert chat["stanchion"]["abstained"] is abstained
            _, text, chunks = _stream_chat(c, question)
        final = next(ch for ch in chunks if ch.get("choices") and ch["choices"][0]["finish_reason"] == "stop")
        assert final["stanchion"]["abstained"] is abstained  # type: ignore[index]
        assert (text == AnswerSpec().abstain_text) is abstained


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/search", {"query": ""}, 422, "invalid_request"),
        ("/v1/search", {"query": "x", "k": 0}, 422, "invalid_request"),
        ("/v1/search", {"query": "x", "bogus": 1}, 422, "invalid_request"),
        ("/v1/search", {"query": "x", "filters": ["no operator"]}, 400, "invalid_request"),
        (
            "/v1/chat/completions",
            {"model": "nope", "messages": [{"role": "user", "content": "hi"}]},
            404,
            "model_not_found",
        ),
        ("/v1/chat/completions", {"model": "default", "messages": []}, 422, "invalid_request"),
        (
            "/v1/chat/completions",
            {"model": "default", "messages": [{"role": "system", "content": "x"}]},
            422,
            "invalid_request",
        ),
        ("/v1/embeddings", {"input": []}, 422, "invalid_request"),
    ],
)
def test_bad_input_gets_4xx_with_a_code(
    api: Api, path: str, body: dict[str, object], status: int, code: str
) -> None:
    with api.client(api.keys.admin) as c:
        r = c.post(path, json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"]


def test_malformed_json_and_oversized_body(api: Api) -> None:
    with api.client(api.keys.admin) as c:
        r = c.post("/v1/search", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
        r = c.post("/v1/search", json={"query": "x" * (2 * 1024 * 1024)})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_scopes_are_enforced(api: Api) -> None:
    with api.client(api.keys.ops) as c:
        r = c.post("/v1/documents", json={"filename": "a.md", "text": "hello"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"


def test_embeddings_in_openai_format(api: Api) -> None:
    with api.client(api.keys.ops) as c:
        r = c.post("/v1/embeddings", json={"input": ["refund policy", "launch"], "model": "all-MiniLM-L6-v2"})
    assert r.status_code == 200
    data = r.json()["data"]
    assert [d["index"] for d in data] == [0, 1] and len(data[0]["embedding"]) == 384


def test_upload_job_search_delete_and_audit(api: Api) -> None:
    text = "The Acme warehouse in Tilburg ships pallets every Tuesday at 06:00."
    with api.client(api.keys.ingest) as c:
        r = c.post(
            "/v1/documents", json={"filename": "warehouse.md", "text": text, "metadata": {"team": "ops"}}
        )
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status"] in ("queued", "running")
        with api.client(api.keys.globex) as other:
            assert other.get(f"/v1/jobs/{job['id']}").status_code == 404
        deadline = time.monotonic() + 120
        while job["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.3)
            job = c.get(f"/v1/jobs/{job['id']}").json()
        assert job["status"] == "done", job
        (doc_id,) = job["result"]["document_ids"]
        assert any("Tilburg" in t for t in _search(api, api.keys.ingest, "when do pallets ship from Tilburg"))
        listed = c.get("/v1/documents").json()["data"]
        assert doc_id in [d["id"] for d in listed] and "acme-finance:budget.md" not in [
            d["id"] for d in listed
        ]
        assert c.get(f"/v1/documents/{doc_id}").json()["metadata"]["team"] == "ops"
        with api.client(api.keys.globex) as other:
            assert other.get(f"/v1/documents/{doc_id}").status_code == 404
            assert other.delete(f"/v1/documents/{doc_id}").status_code == 404
        r = c.delete(f"/v1/documents/{doc_id}")
        assert r.status_code == 200 and r.json()["deleted"] is True
        assert c.get(f"/v1/documents/{doc_id}").status_code == 404
    assert not any("Tilburg" in t for t in _search(api, api.keys.ingest, "when do pallets ship from Tilburg"))
    state = api.state()
    try:
        deletions = state.audit_log("acme", action="documents.delete")
        assert deletions and deletions[0].detail["document"] == doc_id
        # The audit log never holds a key's secret.
        dump = json.dumps([r.as_json() for r in state.audit_log(limit=1000)])
        assert all(k not in dump for k in vars(api.keys).values())
    finally:
        state.close()


def _listed(api: Api, key: str, **params: object) -> list[str]:
    with api.client(key) as c:
        r = c.get("/v1/documents", params=params)
    assert r.status_code == 200, r.text
    return [d["id"] for d in r.json()["data"]]


def test_listing_documents_shows_each_caller_its_own_a_page_at_a_time(api: Api) -> None:
    public, finance = "acme-public:refunds.md", "acme-finance:budget.md"
    assert _listed(api, api.keys.ops) == [public]
    assert _listed(api, api.keys.finance) == sorted([finance, public])
    assert _listed(api, api.keys.admin) == sorted([finance, public])  # admin passes access groups
    assert _listed(api, api.keys.globex) == ["globex:launch.md"]
    assert _listed(api, api.keys.admin, source="acme-finance") == [finance]
    with api.client(api.keys.admin) as c:
        first = c.get("/v1/documents", params={"limit": 1}).json()
        assert first["has_more"] is True and first["first_id"] == first["last_id"] == finance
        second = c.get("/v1/documents", params={"limit": 1, "after": first["last_id"]}).json()
        assert [d["id"] for d in second["data"]] == [public] and second["has_more"] is False
        last = c.get("/v1/documents", params={"after": public}).json()
        assert last == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


def test_upload_errors(api: Api) -> None:
    with api.client(api.keys.ingest) as c:
        r = c.post("/v1/documents", content=b"raw", headers={"content-type": "text/plain"})
        assert r.status_code == 415
        r = c.post("/v1/documents", json={"filename": "a.md", "text": "x", "metadata": {"tenant": "globex"}})
        assert r.status_code == 422 and "tenant" in r.json()["error"]["message"]
        r = c.post("/v1/documents", json={"filename": "a.md", "text": "x", "access_groups": ["finance"]})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_group"
        r = c.post(
            "/v1/documents",
            files={"file": ("notes.md", b"# Notes\n\nMultipart works.")},
            data={"metadata": "[1, 2]"},
        )
        assert r.status_code == 422 and r.json()["error"]["param"] == "metadata"


@pytest.mark.parametrize(
    ("filename", "form", "param"),
    [
        ("n" * 300 + ".md", {}, "filename"),
        ("notes.md", {"metadata": json.dumps({f"k{i}": i for i in range(65)})}, "metadata"),
        ("notes.md", {"metadata": json.dumps({"team": ["a", "b"]})}, "metadata.team"),
        ("notes.md", {"access_groups": "ok, not a name!"}, "access_groups.1"),
        ("notes.md", {"access_groups": ",".join(f"g{i}" for i in range(65))}, "access_groups"),
    ],
)
def test_multipart_upload_has_the_limits_of_a_json_upload(
    api: Api, filename: str, form: dict[str, str], param: str
) -> None:
    with api.client(api.keys.admin) as c:
        r = c.post("/v1/documents", files={"file": (filename, b"# Notes\n\nText.")}, data=form)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["param"] == param


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_rate_limit_answers_429_with_retry_after(serve: ServerFactory, backend: str) -> None:
    api = serve(backend, server={"rate_limits": {"requests_per_minute": 3, "tokens_per_minute": 100000}})
    with api.client(api.keys.ops) as c:
        codes = [c.post("/v1/search", json={"query": "refund"}).status_code for _ in range(4)]
        r = c.post("/v1/search", json={"query": "refund"})
    assert codes == [200, 200, 200, 429]
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    # Sliding window over two minute-long windows: the wait can exceed 60 s, never 120 s.
    assert 1 <= int(r.headers["retry-after"]) <= 120
    # Another key has its own budget.
    with api.client(api.keys.finance) as c:
        assert c.post("/v1/search", json={"query": "refund"}).status_code == 200


def test_revoked_key_is_refused(api: Api) -> None:
    state = api.state()
    try:
        key, secret = state.create_key(tenant="acme", user="tmp")
        with api.client(secret) as c:
            assert c.post("/v1/search", json={"query": "refund"}).status_code == 200
            state.revoke_key(key.id)
            time.sleep(2.1)  # the per-worker key cache holds entries for 2 s
            r = c.post("/v1/search", json={"query": "refund"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "revoked_api_key"
    finally:
        state.close()


def test_ops_endpoints(api: Api) -> None:
    with api.client(None) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        with api.client(api.keys.ops) as k:
            k.post("/v1/search", json={"query": "refund"})
        metrics = c.get("/metrics").text
        assert 'stanchion_http_requests_total{method="POST",route="/v1/search",status="200"}' in metrics or (
            "stanchion_http_requests_total" in metrics and 'route="/v1/search"' in metrics
        )
        schema = c.get("/openapi.json").json()
        assert "/v1/chat/completions" in schema["paths"] and "/v1/documents/{document_id}" in schema["paths"]
        stream = schema["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
        event = stream["text/event-stream"]["schema"]["properties"]["data"]["anyOf"][1]["contentSchema"]
        for ref in (branch["$ref"] for branch in event["oneOf"]):  # the events' models are described
            assert ref.rsplit("/", 1)[1] in schema["components"]["schemas"], ref
        assert {"ChunkChoice", "ChunkDelta", "ToolCallDelta"} <= set(schema["components"]["schemas"])
        r = c.get("/v1/nothing-here")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert "x-request-id" in r.headers


def test_usage_is_per_tenant_and_admin_only(api: Api) -> None:
    with api.client(api.keys.ops) as c:
        c.post("/v1/search", json={"query": "refund"})
        assert c.get("/v1/usage").status_code == 403
    with api.client(api.keys.globex) as c:
        c.post("/v1/search", json={"query": "launch"})
        c.post("/v1/search", json={"query": "launch code"})
    with api.client(api.keys.admin) as c:
        deadline = time.monotonic() + 30  # usage is read from the audit log, written in batches
        while (usage := c.get("/v1/usage").json())["requests"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    # acme: the ops key's search (globex's two are not counted)
    assert usage["tenant"] == "acme" and usage["requests"] == 1


def test_audit_log_is_the_tenants_own_newest_first_a_page_at_a_time(api: Api) -> None:
    started = time.time()
    with api.client(api.keys.ops) as c:
        c.post("/v1/search", json={"query": "refund window"})
        assert c.get("/v1/audit").status_code == 403  # admin scope only
    with api.client(api.keys.finance) as c:
        c.post("/v1/search", json={"query": "q3 budget"})
    with api.client(api.keys.globex) as c:
        c.post("/v1/search", json={"query": "launch code"})
    with api.client(api.keys.admin) as c:
        # Records reach the log in batches (server/audit.py flushes every 0.2 s): wait for them.
        deadline = time.monotonic() + 30
        while len((searches := c.get("/v1/audit", params={"action": "search"}).json())["data"]) < 2:
            assert time.monotonic() < deadline, searches
            time.sleep(0.05)
        first = c.get("/v1/audit", params={"action": "search", "limit": 1}).json()
        rest = c.get("/v1/audit", params={"action": "search", "before": first["last_id"]}).json()
        later = c.get("/v1/audit", params={"since": time.time() + 60}).json()
        period = c.get("/v1/usage", params={"since": started - 1, "until": started + 3600}).json()
        before_start = c.get("/v1/usage", params={"until": started - 1}).json()
        assert c.get("/v1/audit", params={"since": "yesterday"}).status_code == 422
    assert [r["query"] for r in searches["data"]] == ["q3 budget", "refund window"]  # globex's is not there
    assert all(r["status"] == 200 and r["object"] == "audit.record" for r in searches["data"])
    assert first["has_more"] is True and [r["query"] for r in first["data"]] == ["q3 budget"]
    assert [r["query"] for r in rest["data"]] == ["refund window"] and rest["has_more"] is False
    assert later["data"] == [] and later["has_more"] is False
    assert period["requests"] == 2 and before_start["requests"] == 0


def test_jobs_are_listed_for_their_uploader_and_all_of_them_for_an_admin(api: Api) -> None:
    state = api.state()
    try:
        _, bea = state.create_key(tenant="acme", user="bea", groups=["ops"], scopes=["ingest"])
    finally:
        state.close()
    upload = {"filename": "note.md", "text": "A short note about pallets."}
    with api.client(api.keys.ingest) as c:
        mine = c.post("/v1/documents", json=upload).json()["id"]
    with api.client(bea) as c:
        theirs = c.post("/v1/documents", json=upload).json()["id"]
        assert [j["id"] for j in c.get("/v1/jobs").json()["data"]] == [theirs]
        assert c.get(f"/v1/jobs/{mine}").status_code == 404  # another user's upload
        assert c.get("/v1/jobs", params={"status": "lost"}).status_code == 422
    with api.client(api.keys.admin) as c:
        assert [j["id"] for j in c.get("/v1/jobs").json()["data"]] == [theirs, mine]
        first = c.get("/v1/jobs", params={"limit": 1}).json()
        second = c.get("/v1/jobs", params={"limit": 1, "before": first["last_id"]}).json()
        assert c.get(f"/v1/jobs/{theirs}").status_code == 200
    assert first["has_more"] is True and [j["id"] for j in first["data"]] == [theirs]
    assert second["has_more"] is False and [j["id"] for j in second["data"]] == [mine]
    with api.client(api.keys.globex) as c:
        listed = c.get("/v1/jobs").json()
        assert listed["data"] == [] and c.get(f"/v1/jobs/{mine}").status_code == 404
