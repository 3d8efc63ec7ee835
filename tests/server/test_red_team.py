"""What a red-team pass over the issue-9 fixes still broke, through the real API on both backends:
an uploaded corpus file that names another user's document in its records, metadata no store
can hold accepted and then crashing the job, deeply nested HTML holding an ingest process for hours,
and a lone surrogate outside message content reaching the provider adapter (a 500)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from tests.server.conftest import Api, ServerFactory

from stanchion.testing.fake_openai import FakeOpenAIServer, Reply

_POLLS = 6000  # a job that never settles fails the test instead of hanging it


def _key(api: Api, user: str, group: str) -> str:
    state = api.state()
    try:
        return state.create_key(tenant="acme", user=user, groups=[group], scopes=["query", "ingest"])[1]
    finally:
        state.close()


def _settled(c: httpx.Client, job_id: str) -> dict[str, Any]:
    """The job once it is done or failed (waits on its status, polling)."""
    for _ in range(_POLLS):
        job: dict[str, Any] = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.05)  # pacing between polls, not a wait for an expected duration
    raise AssertionError(f"job {job_id} never settled: {job}")


def _upload(c: httpx.Client, filename: str, text: str, **fields: Any) -> dict[str, Any]:
    r = c.post("/v1/documents", json={"filename": filename, "text": text, **fields})
    assert r.status_code == 202, r.text
    return _settled(c, r.json()["id"])


class TestCorpusRecordIds:
    def test_a_corpus_record_cannot_overwrite_another_users_document(self, api: Api) -> None:
        """A g2 user's .jsonl whose ``_id`` spells a g1 document's id adds a document of its own
        upload; the g1 document keeps its text and its group (it was replaced and made public)."""
        alice, bob = _key(api, "alice", "g1"), _key(api, "bob", "g2")
        with api.client(alice) as a, api.client(bob) as b:
            job = _upload(a, "vault.txt", "The g1 vault code is narwhal-99.", access_groups=["g1"])
            [target] = job["result"]["document_ids"]
            record = {
                "_id": target.split(":", 1)[1],
                "title": "x",
                "text": "The vault code is bob-controlled.",
            }
            attack = _upload(b, "corpus.jsonl", json.dumps(record) + "\n")
            assert attack["status"] == "done", attack
            [written] = attack["result"]["document_ids"]
            assert written != target and written.startswith(f"upload.acme:{attack['id']}-corpus.jsonl:")
            kept = a.get(f"/v1/documents/{target}")
            assert kept.status_code == 200, kept.text
            assert kept.json()["access_groups"] == ["g1"]
            hits = a.post("/v1/search", json={"query": "vault code", "k": 10}).json()["hits"]
            assert {h["document_id"]: h["text"] for h in hits}[target] == "The g1 vault code is narwhal-99."
            assert target not in {
                h["document_id"] for h in b.post("/v1/search", json={"query": "vault code"}).json()["hits"]
            }


class TestMetadataNumbers:
    def test_non_finite_metadata_is_a_422_not_a_crashed_job(self, api: Api) -> None:
        """inf and NaN (JSON ``1e400``, ``NaN``, in a JSON body or a form) fit no store: a 422 naming
        metadata, where the upload was accepted and its job failed with an internal error."""
        with api.client(api.keys.ingest) as c:
            for raw in ("1e400", "-1e400", "NaN", "Infinity"):
                metadata = '{"score": ' + raw + "}"
                body = '{"filename": "m.txt", "text": "x", "metadata": ' + metadata + "}"
                r = c.post("/v1/documents", content=body, headers={"content-type": "application/json"})
                assert r.status_code == 422, (raw, r.text)
                assert r.json()["error"]["param"].startswith("metadata"), r.text
                form = c.post(
                    "/v1/documents",
                    files={"file": ("m.txt", b"x")},
                    data={"metadata": metadata},
                )
                assert form.status_code == 422, (raw, form.text)
            assert (
                _upload(c, "m.txt", "finite numbers are kept", metadata={"score": 1e300})["status"] == "done"
            )


class TestNestedHtml:
    def test_deeply_nested_html_fails_with_a_reason(self, api: Api) -> None:
        """A few kilobytes of nested <div>s fail at once, saying why; they took the ingest process
        minutes (quadratic in the depth: hours for a 600 KB file) and then failed on RecursionError."""
        page = "<html><body>" + "<div>" * 5000 + "deep text</body></html>"
        with api.client(api.keys.ingest) as c:
            job = _upload(c, "deep.html", page)
            assert job["status"] == "failed", job
            assert "nested more than 256 levels deep" in job["error"], job["error"]
            assert (
                _upload(c, "flat.html", "<html><body><p>A flat page is read.</p></body></html>")["status"]
                == "done"
            )


_S = "@lone@"  # stands for an escaped lone surrogate: JSON text is the only way to send one
_HI = [{"role": "user", "content": "hi"}]
_SURROGATE_BODIES = {
    "stop": {"model": "gw", "messages": _HI, "stop": [_S]},
    "messages": {"model": "gw", "messages": [{"role": "user", "content": "hi", "name": _S}]},
    "tools": {
        "model": "gw",
        "messages": _HI,
        "tools": [{"type": "function", "function": {"name": "f", "description": _S}}],
    },
    "tools.0": {
        "model": "gw",
        "messages": _HI,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {_S: 1}}}],
    },
    "user": {"model": "gw", "messages": _HI, "user": _S},
    "messages.0": {
        "model": "gw",
        "messages": [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": _S}}],
            },
            {"role": "tool", "tool_call_id": "1", "content": "ok"},
        ],
    },
}


class TestSurrogatesBeyondContent:
    @pytest.mark.parametrize("backend", ["sqlite", "postgres"])
    def test_a_lone_surrogate_anywhere_in_a_chat_request_is_a_422(
        self, serve: ServerFactory, backend: str
    ) -> None:
        """In ``stop``, a message's ``name``, a tool call's arguments, a tool's description or
        schema, ``user``: a 422 naming the field, plain or streamed, where the provider adapter's
        JSON encoder raised and the client got a 500 (or a stream's internal_error event)."""
        with FakeOpenAIServer(default=Reply(text="Hello from upstream.", usage=(3, 4))) as upstream:
            api = serve(
                backend=backend,
                models={
                    "up": {"provider": "openai", "model": "m", "base_url": upstream.url, "max_retries": 0}
                },
                routes={"default": {"models": ["up"]}, "gw": {"models": ["up"], "grounded": False}},
            )
            with api.client(api.keys.ops) as c:
                for field, body in _SURROGATE_BODIES.items():
                    for stream in (False, True):
                        raw = json.dumps({**body, "stream": stream}).replace(_S, "\\ud800")
                        r = c.post(
                            "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
                        )
                        assert r.status_code == 422, (field, stream, r.text)
                        assert r.json()["error"]["param"].startswith(field.split(".")[0]), r.text
                ok = c.post(
                    "/v1/chat/completions",
                    json={"model": "gw", "messages": [{"role": "user", "content": "hi"}], "stop": ["x"]},
                )
                assert ok.status_code == 200, ok.text


class TestFileMetadataText:
    def test_nul_in_a_files_own_metadata_is_dropped_on_every_backend(self, api: Api) -> None:
        """Front matter or a corpus record's metadata holding NUL is ingested, the NUL dropped, on
        PostgreSQL as on SQLite (PostgreSQL refused the whole write: the job failed)."""
        files = {
            "nul.md": '---\nowner: "a\\0b"\n"k\\0ey": 1\n---\n# Tapirs\n\nTapirs browse at night.\n',
            "nul.jsonl": '{"_id": "r1", "text": "Okapis live in forests.", "metadata": {"owner": "c\\u0000d"}}\n',
        }
        with api.client(api.keys.ingest) as c:
            for name, text in files.items():
                job = _upload(c, name, text)
                assert job["status"] == "done", job
                [doc_id] = job["result"]["document_ids"]
                doc = c.get(f"/v1/documents/{doc_id}").json()
                assert doc["metadata"]["owner"] in ("ab", "cd"), doc
                assert "\x00" not in json.dumps(doc, ensure_ascii=False)
