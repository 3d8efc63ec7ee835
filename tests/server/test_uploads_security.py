"""Uploads through the real API, on both backends: an upload never replaces, reveals or changes the
visibility of a document its caller cannot see; replacing is explicit and audited; a job that
ingests nothing fails with a reason; file names follow one rule in jobs, document ids and audit."""

from __future__ import annotations

import io
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from tests.server.conftest import Api

from stanchion.spec import Spec

_POLLS = 6000  # a job that never settles fails the test instead of hanging it


@dataclass
class People:
    alice: str  # acme, group g1, query + ingest
    bob: str  # acme, group g2, query + ingest


def _people(api: Api) -> People:
    state = api.state()
    try:

        def key(user: str, group: str) -> str:
            return state.create_key(tenant="acme", user=user, groups=[group], scopes=["query", "ingest"])[1]

        return People(alice=key("alice", "g1"), bob=key("bob", "g2"))
    finally:
        state.close()


def _upload(c: httpx.Client, filename: str, text: str, *, replace: str | None = None, **fields: Any) -> str:
    params = {"replace": replace} if replace is not None else {}
    r = c.post("/v1/documents", params=params, json={"filename": filename, "text": text, **fields})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _settled(c: httpx.Client, job_id: str) -> dict[str, Any]:
    """The job once it is done or failed (waits on its status, polling)."""
    for _ in range(_POLLS):
        job: dict[str, Any] = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.05)  # pacing between polls, not a wait for an expected duration
    raise AssertionError(f"job {job_id} never settled: {job}")


_FORM = {"content-type": "multipart/form-data; boundary=b0undary"}


def _raw_form(filename: str, data: bytes) -> bytes:
    """A multipart body whose file name is sent as is (httpx would percent-encode controls)."""
    head = f'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'
    return head.encode() + data + b"\r\n--b0undary--\r\n"


def _document(c: httpx.Client, doc_id: str) -> dict[str, Any] | None:
    r = c.get(f"/v1/documents/{doc_id}")
    assert r.status_code in (200, 404), r.text
    return r.json() if r.status_code == 200 else None


def _texts(c: httpx.Client, query: str) -> list[str]:
    r = c.post("/v1/search", json={"query": query, "k": 10})
    assert r.status_code == 200, r.text
    return [h["text"] for h in r.json()["hits"]]


def _audit(api: Api, action: str) -> list[dict[str, Any]]:
    with api.client(api.keys.admin) as c:
        r = c.get("/v1/audit", params={"action": action})
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


class TestAnUploadNeverReplaces:
    def test_another_groups_upload_of_the_same_name_leaves_the_document_alone(self, api: Api) -> None:
        """A g2 user uploading a g1 document's file name, with or without groups, gets documents of
        its own: the g1 document keeps its text and its group, and nothing tells g2 it exists."""
        people = _people(api)
        secret = "The g1 vault code is heron-77."
        with api.client(people.alice) as alice, api.client(people.bob) as bob:
            (original,) = _settled(alice, _upload(alice, "g1secret.txt", secret, access_groups=["g1"]))[
                "result"
            ]["document_ids"]
            public = _settled(bob, _upload(bob, "g1secret.txt", "Public attacker text about herons."))
            mine = _settled(bob, _upload(bob, "g1secret.txt", "g2 attacker text.", access_groups=["g2"]))
            assert public["status"] == mine["status"] == "done", (public, mine)
            ids = public["result"]["document_ids"] + mine["result"]["document_ids"]
            assert len(ids) == 2 and original not in ids
            assert original not in str(public) + str(mine)
            kept = _document(alice, original)
            assert kept is not None and kept["access_groups"] == ["g1"]
            assert any("heron-77" in t for t in _texts(alice, "g1 vault code"))
            assert _document(bob, original) is None
            assert not any("heron-77" in t for t in _texts(bob, "g1 vault code"))
            # Naming it explicitly answers as for an id that does not exist.
            r = bob.post(
                "/v1/documents",
                params={"replace": original},
                json={"filename": "g1secret.txt", "text": "overwritten"},
            )
            assert r.status_code == 404 and r.json()["error"]["code"] == "document_not_found"
            assert r.json()["error"]["message"] == f"replace: no document {original!r}"
        assert _audit(api, "documents.replace") == []

    def test_distinct_names_and_repeated_names_never_share_an_id(self, api: Api) -> None:
        """Names the old cleaning mapped to one id, and one name uploaded twice, are documents of their own."""
        names = ["a b.txt", "a_b.txt", "dir/x.txt", "x.txt", "日本.txt", "中国.txt", "x.txt"]
        with api.client(api.keys.ingest) as c:
            jobs = [
                _upload(c, name, f"Document number {i} of the name test.") for i, name in enumerate(names)
            ]
            results = [_settled(c, job) for job in jobs]
            assert [j["status"] for j in results] == ["done"] * len(names), results
            ids = [j["result"]["document_ids"][0] for j in results]
            assert len(set(ids)) == len(names)
            assert all(doc_id.startswith("upload.acme:job_") for doc_id in ids)
            assert [j["filename"] for j in results] == [
                "a b.txt",
                "a_b.txt",
                "x.txt",
                "x.txt",
                "日本.txt",
                "中国.txt",
                "x.txt",
            ]
            for doc_id in ids:
                assert _document(c, doc_id) is not None


class TestReplacing:
    def test_replace_is_explicit_keeps_the_id_and_is_audited(self, api: Api) -> None:
        """``replace`` names the document; the new version takes its id; the audit record names the
        document, its old hash and groups."""
        people = _people(api)
        with api.client(people.alice) as alice:
            (doc_id,) = _settled(
                alice,
                _upload(
                    alice,
                    "policy.md",
                    "# Policy\n\nVisitors sign in at the north gate.",
                    access_groups=["g1"],
                ),
            )["result"]["document_ids"]
            job = _settled(
                alice,
                _upload(
                    alice, "policy-v2.md", "# Policy\n\nVisitors sign in at the south gate.", replace=doc_id
                ),
            )
            assert job["status"] == "done" and job["result"]["document_ids"] == [doc_id], job
            assert any("south gate" in t for t in _texts(alice, "where do visitors sign in"))
            assert not any("north gate" in t for t in _texts(alice, "where do visitors sign in"))
            doc = _document(alice, doc_id)
            assert doc is not None and doc["access_groups"] == []  # the replacement's own groups
            # A replacement keeps the type; only uploads are replaced (a spec's file is re-ingested).
            r = alice.post(
                "/v1/documents", params={"replace": doc_id}, json={"filename": "p.txt", "text": "x"}
            )
            assert r.status_code == 422 and r.json()["error"]["param"] == "filename"
            r = alice.post(
                "/v1/documents",
                params={"replace": "acme-public:refunds.md"},
                json={"filename": "r.md", "text": "x"},
            )
            assert r.status_code == 422 and r.json()["error"]["param"] == "replace"
        (record,) = _audit(api, "documents.replace")
        assert record["user"] == "alice" and record["detail"]["document"] == doc_id
        assert record["detail"]["job"] == job["id"] and record["detail"]["filename"] == "policy-v2.md"
        assert record["detail"]["old_access_groups"] == ["g1"] and record["detail"]["access_groups"] == []
        assert isinstance(record["detail"]["old_hash"], str) and record["detail"]["old_hash"]

    def test_a_second_replacement_never_silently_overwrites_the_first(self, api: Api) -> None:
        """While one replacement of a document is queued or running, another is a 409 (whichever
        worker takes it); once it has run, the next one replaces the new version and says so."""
        with api.client(api.keys.ingest) as c:
            (doc_id,) = _settled(c, _upload(c, "hours.txt", "The depot opens at six."))["result"][
                "document_ids"
            ]
            first = _upload(c, "hours.txt", "The depot opens at seven.", replace=doc_id)
            again = c.post(
                "/v1/documents",
                params={"replace": doc_id},
                json={"filename": "hours.txt", "text": "The depot opens at eight."},
            )
            if again.status_code == 409:  # the first was still queued or running
                assert again.json()["error"]["code"] == "conflict", again.text
                assert _settled(c, first)["status"] == "done"
                second = _upload(c, "hours.txt", "The depot opens at eight.", replace=doc_id)
            else:  # the first had already run: this one replaces its version
                assert again.status_code == 202, again.text
                second = str(again.json()["id"])
            assert _settled(c, second)["status"] == "done"
            assert any("eight" in t for t in _texts(c, "when does the depot open"))
        first_record, second_record = sorted(_audit(api, "documents.replace"), key=lambda r: r["id"])
        # The second names the version the first wrote, not the one both started from.
        assert second_record["detail"]["old_hash"] != first_record["detail"]["old_hash"]


class TestJobOutcome:
    def test_a_job_that_ingests_nothing_fails_with_a_reason_and_names_no_document(self, api: Api) -> None:
        """Unreadable content, a name with no known type and an empty text fail; the job names no
        document, neither a hidden one with the same name nor the one a failed replacement keeps."""
        people = _people(api)
        with api.client(people.alice) as alice, api.client(people.bob) as bob:
            (hidden,) = _settled(
                alice, _upload(alice, "plan.txt", "The g1 plan is osprey.", access_groups=["g1"])
            )["result"]["document_ids"]
            r = bob.post("/v1/documents", files={"file": ("plan.txt", b"\x00\x01\x02\x03binary" * 64)})
            assert r.status_code == 202, r.text
            jobs = [
                r.json()["id"],
                _upload(bob, "CON", "Plain text without an extension."),
                _upload(bob, "blank.md", " \n\n "),
            ]
            failed_replace = alice.post(
                "/v1/documents",
                params={"replace": hidden},
                files={"file": ("plan.txt", b"\x00\x01\x02\x03binary" * 64)},
            )
            settled = [_settled(bob, job) for job in jobs] + [_settled(alice, failed_replace.json()["id"])]
            for job in settled:
                assert job["status"] == "failed" and job["error"], job
                assert job["result"].get("document_ids", []) == [] and hidden not in str(job), job
            assert "type" in settled[1]["error"]
            kept = _document(alice, hidden)
            assert kept is not None and kept["access_groups"] == ["g1"]

    def test_documents_the_uploader_cannot_see_are_not_named_but_the_job_is_done(
        self, api: Api, fixtures: Path
    ) -> None:
        """A Slack export's channels add groups of their own: the job is done, and names none of
        the documents its uploader's groups do not admit."""
        people = _people(api)
        export = io.BytesIO()
        with zipfile.ZipFile(export, "w") as archive:
            root = fixtures / "slack" / "export"
            for file in sorted(p for p in root.rglob("*") if p.is_file()):
                archive.write(file, file.relative_to(root).as_posix())
        with api.client(people.alice) as alice:
            r = alice.post("/v1/documents", files={"file": ("export.zip", export.getvalue())})
            assert r.status_code == 202, r.text
            job = _settled(alice, r.json()["id"])
        assert job["status"] == "done" and job["result"]["documents"] > 0, job
        assert job["result"]["document_ids"] == []
        with api.client(api.keys.admin) as admin:
            listed = admin.get("/v1/documents", params={"source": "upload.acme"}).json()["data"]
        assert len(listed) == job["result"]["documents"]
        assert all(d["id"].startswith(f"upload.acme:{job['id']}-export.zip") for d in listed)


class TestStoredNames:
    def test_one_rule_for_file_names_in_jobs_document_ids_and_audit(self, api: Api) -> None:
        """A credential in a file name is redacted alike in the job, the document id and the audit
        record; only the last path component is kept."""
        with api.client(api.keys.ingest) as c:
            job_id = _upload(c, f"C:\\tmp\\notes-{api.keys.ingest}.md", "# Notes\n\nPallets ship on Tuesday.")
            job = _settled(c, job_id)
        assert job["status"] == "done", job
        (doc_id,) = job["result"]["document_ids"]
        assert job["filename"] == "notes-[REDACTED].md"
        assert doc_id == f"upload.acme:{job_id}-notes-[REDACTED].md"
        (record,) = [r for r in _audit(api, "documents.upload") if r["detail"]["job"] == job_id]
        assert record["detail"]["filename"] == job["filename"]
        assert api.keys.ingest not in str(job) + str(record)

    @pytest.mark.parametrize(
        "name",
        ["a\x00b.txt", "line\nbreak.md", "esc\x1b[31m.md", "invoice\u202etxt.md", "zero\u200bwidth.md"],
    )
    def test_control_and_invisible_characters_in_a_name_are_422(self, api: Api, name: str) -> None:
        """In a JSON upload and a multipart one alike, before anything is stored."""
        with api.client(api.keys.ingest) as c:
            as_json = c.post("/v1/documents", json={"filename": name, "text": "Some text."})
            as_form = c.post("/v1/documents", content=_raw_form(name, b"Some text."), headers=_FORM)
            jobs = c.get("/v1/jobs").json()["data"]
        for r in (as_json, as_form):
            assert r.status_code == 422, r.text
            assert r.json()["error"]["param"] == "filename", r.text
        assert jobs == []

    @pytest.mark.parametrize(
        ("metadata", "param"),
        [({"team": "o\x00ps"}, "metadata.team"), ({"te\x00am": "ops"}, "metadata")],
    )
    def test_nul_in_metadata_is_422(self, api: Api, metadata: dict[str, str], param: str) -> None:
        with api.client(api.keys.ingest) as c:
            r = c.post("/v1/documents", json={"filename": "a.md", "text": "Some text.", "metadata": metadata})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["param"].startswith(param), r.text

    def test_nul_in_replace_is_422(self, api: Api) -> None:
        with api.client(api.keys.ingest) as c:
            r = c.post(
                "/v1/documents",
                params={"replace": "upload.acme:a\x00.md"},
                json={"filename": "a.md", "text": "x"},
            )
        assert r.status_code == 422 and r.json()["error"]["param"] == "query.replace", r.text


class TestUnreadableBody:
    def test_a_json_upload_that_is_not_json_is_422(self, api: Api) -> None:
        """The upload reads its JSON body itself (``model_validate_json``): still a 422, not a 500."""
        with api.client(api.keys.ingest) as c:
            r = c.post(
                "/v1/documents",
                content=b'{"filename": "a.md", "text": ',
                headers={"content-type": "application/json"},
            )
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text
        assert "not valid JSON" in r.json()["error"]["message"]


class TestSpec:
    def test_no_spec_source_takes_the_name_of_a_tenants_uploads(self, tmp_path: Path) -> None:
        """``stanchion ingest`` would prune a tenant's uploads missing from such a source's folder."""
        with pytest.raises(ValidationError, match="hold API uploads"):
            Spec.model_validate(
                {
                    "sources": [{"name": "upload.acme", "path": str(tmp_path), "tenant": "acme"}],
                    "base_dir": tmp_path,
                }
            )


class TestOnlyTheUploaderChanges:
    def test_a_reader_may_not_replace_or_delete_anothers_upload(self, api: Api) -> None:
        """Bob sees Alice's public upload but may neither replace it (nor narrow its groups) nor
        delete it: 403; Alice and an admin may."""
        people = _people(api)
        with api.client(people.alice) as alice, api.client(people.bob) as bob:
            (doc_id,) = _settled(alice, _upload(alice, "canteen.txt", "The canteen opens at noon."))[
                "result"
            ]["document_ids"]
            assert _document(bob, doc_id) is not None  # public: Bob reads it
            r = bob.post(
                "/v1/documents",
                params={"replace": doc_id},
                json={"filename": "canteen.txt", "text": "Closed.", "access_groups": ["g2"]},
            )
            assert r.status_code == 403 and r.json()["error"]["code"] == "not_document_owner", r.text
            r = bob.delete(f"/v1/documents/{doc_id}")
            assert r.status_code == 403 and r.json()["error"]["code"] == "not_document_owner", r.text
            document = _document(alice, doc_id)
            assert document is not None and document["access_groups"] == []
            again = _upload(alice, "canteen.txt", "The canteen opens at one.", replace=doc_id)
            assert _settled(alice, again)["status"] == "done"
        with api.client(api.keys.admin) as admin:
            assert admin.delete(f"/v1/documents/{doc_id}").status_code == 200
        assert _audit(api, "documents.delete")[0]["detail"]["document"] == doc_id

    def test_a_spec_sources_document_is_deleted_only_by_an_admin(self, api: Api) -> None:
        """A document the spec ingested is the spec's: an ingest key that reads it gets a 403."""
        with api.client(api.keys.ingest) as c:
            listed = [d["id"] for d in c.get("/v1/documents").json()["data"]]
            spec_doc = next(d for d in listed if not d.startswith("upload."))
            r = c.delete(f"/v1/documents/{spec_doc}")
            assert r.status_code == 403 and r.json()["error"]["code"] == "not_document_owner", r.text
            assert _document(c, spec_doc) is not None
