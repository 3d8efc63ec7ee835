"""The e-mail loader, on the SpamAssassin test corpus and on small hand-written messages."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from stanchion.errors import IngestError
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.loaders.email import decode_bytes, load_email, strip_reply
from stanchion.types import Document


def _load(path: Path, relpath: str = "mail") -> list[Document]:
    return list(load_email(path, LoadContext(source="mail", relpath=relpath, access_groups=("hr",))))


def _one(path: Path) -> Document:
    docs = _load(path)
    assert len(docs) == 1
    return docs[0]


@pytest.fixture(scope="module")
def corpus(shared_data: Path) -> Path:
    return shared_data / "emails-spamassassin-testcorpus"


class TestRealCorpus:
    """Real 1991-2023 mail: CJK charsets, mislabelled charsets, broken MIME, mbox envelopes."""

    def test_every_message_loads_or_fails_with_a_reason(self, corpus: Path) -> None:
        """All 134 files load; only the SMTP transcript and the one-newline file are refused."""
        refused = {}
        loaded = 0
        for path in sorted(p for p in corpus.rglob("*") if p.is_file() and p.name != "SOURCE.txt"):
            try:
                loaded += len(_load(path))
            except IngestError as exc:
                refused[path.relative_to(corpus).as_posix()] = exc.reason
        assert refused == {
            "spam/bsmtp": "no mail headers (From, Subject, Message-ID, ...) found",
            "spam/bsmtpnull": "empty file",
        }
        assert loaded == 116  # the other 16 hold no text at all (image-, audio- or binary-only parts)

    def test_cjk_bodies_decode(self, corpus: Path) -> None:
        """gb2312, big5 (base64 HTML) and EUC-JP mislabelled as iso-2022-jp all decode to CJK text."""
        gb = _one(corpus / "nice/cjk/gb2312.2")
        assert "假设你的硬碟是IDE介面" in gb.text
        assert gb.title == "RE: 装硬碟问题"
        big5 = _one(corpus / "nice/cjk/big5-base64.1")
        assert "永久網址" in big5.text
        assert big5.title.startswith("[SLAT-talk] 鉅靡6月17日新片又到")  # raw 8-bit Big5 header
        jp = _one(corpus / "nice/cjk/iso-2022-jp.2")
        assert "以下、patches/patch-aa に対するパッチです。" in jp.text
        assert "\ufffd" not in jp.text

    def test_quoted_reply_is_removed(self, corpus: Path) -> None:
        """The quoted "> " paragraph of a reply is gone; the reply itself stays."""
        doc = _one(corpus / "nice/base64.txt")
        assert "What I'd prefer would be another block tag" not in doc.text
        assert "Attached is a better patch" in doc.text
        gb = _one(corpus / "nice/cjk/gb2312.2")
        assert "From: 邓惠成" not in gb.text  # an Outlook-style quoted header block and below

    def test_signature_is_removed(self, corpus: Path) -> None:
        """Text below "-- " (and a bare "--" near the end) is the signature and is dropped."""
        assert "Duncan Findlay" not in _one(corpus / "nice/007").text
        assert "GPG fingerprint" not in _one(corpus / "nice/cjk/iso-2022-jp.1").text
        assert "To UNSUBSCRIBE" not in _one(corpus / "nice/cjk/gb2312.2").text
        assert "julliard@winehq.com" not in _one(corpus / "nice/mailman_message.txt").text

    def test_text_attachments_are_sections(self, corpus: Path) -> None:
        """Text attachments, including a Shift_JIS one, become sections tagged with their file name."""
        doc = _one(corpus / "nice/cjk/iso-2022-jp.1")
        attached = {s.metadata["attachment"]: s.text for s in doc.sections if "attachment" in s.metadata}
        assert set(attached) == {"test-sjis.txt", "test-archive.txt"}
        assert "このファイルの形式は" in attached["test-sjis.txt"]
        assert doc.metadata["attachments"] == ["test-sjis.txt", "test-archive.txt"]
        csv = _one(corpus / "spam/olevbmacro/goodcsv.eml")
        assert csv.sections[-1].metadata == {"attachment": "good.csv"}

    def test_headers_become_metadata(self, corpus: Path) -> None:
        """From, To, Cc, Subject, Date (as UTC), Message-ID and In-Reply-To are kept."""
        doc = _one(corpus / "nice/002")
        assert doc.metadata["from"] == (
            "Whitelist Nonspam Testing <whitelist_test@whitelist.spamassassin.taint.org>"
        )
        assert doc.metadata["cc"] == "spamassassin-talk@lists.sourceforge.net"
        assert doc.metadata["created_at"] == "2001-12-06T09:21:06+00:00"
        assert doc.metadata["message_id"] == "1896.144.137.3.98.1007630466.squirrel@jmason.org"
        assert doc.metadata["in_reply_to"] == "1007628628.465.0.camel@belphegore.hughes-family.org"
        assert doc.access_groups == ("hr",)

    def test_envelope_line_file_is_an_mbox_of_one(self, corpus: Path) -> None:
        """A message file starting with a "From " envelope line is read as an mbox; dates convert to UTC."""
        doc = _one(corpus / "nice/001")
        assert doc.id == "mail:mail:0"
        assert doc.metadata["created_at"] == "2001-05-15T21:31:22+00:00"  # 17:31:22 -0400
        assert doc.title.startswith('[HC Announce] Ximian Evolution 0.10 "Tasmanian Devil"')

    def test_broken_mime_is_recovered(self, corpus: Path) -> None:
        """Spam whose multipart boundary never matches, and UTF-16 parts, still give their text."""
        assert _one(corpus / "spam/015").text.startswith("Good Day,")
        assert "Dear potencial partner" in _one(corpus / "spam/utf16.eml").text

    def test_message_without_text_yields_nothing(self, corpus: Path) -> None:
        """A message with no body and no text attachment produces no Document."""
        assert _load(corpus / "nice/no_body") == []


class TestFixtures:
    """Hand-written messages that pin down reply stripping, HTML and mbox handling."""

    def test_reply_with_attachment(self, fixtures: Path) -> None:
        """Quote, attribution and signature go; the reply and the text attachment stay; binary is skipped."""
        doc = _one(fixtures / "email" / "reply.eml")
        body, attachment = doc.sections
        assert body.text.split("\n\n") == [
            "Hi Alice,",
            "The budget looks fine to me; approve the café line.",
            "Thanks for the notes attached.",
        ]
        assert attachment.text == "Attachment line: travel is capped at 5000 EUR."
        assert attachment.metadata == {"attachment": "notes.txt"}
        assert "4242" not in doc.text and "ACME" not in doc.text and "wrote:" not in doc.text
        assert doc.metadata["created_at"] == "2024-04-02T14:15:00+00:00"
        assert doc.metadata["to"] == "Alice Liddell <alice@example.com>"
        assert doc.title == "Re: Q3 budget"
        assert doc.id == "mail:mail"

    def test_outlook_original_message(self, fixtures: Path) -> None:
        """Everything from "-----Original Message-----" down is the quoted original."""
        assert _one(fixtures / "email" / "outlook.eml").text == "Friday is confirmed."

    def test_html_only(self, fixtures: Path) -> None:
        """HTML becomes one line per block; scripts, styles, head and quoted blocks are dropped."""
        doc = _one(fixtures / "email" / "html_only.eml")
        assert doc.text == "Spring update\nWe moved to the new office.\nCheers & see you"
        assert doc.metadata["created_at"] == "2024-04-04T10:00:00+00:00"

    def test_mbox(self, fixtures: Path) -> None:
        """An mbox gives one Document per message with index ids; ">From " is unescaped."""
        docs = _load(fixtures / "email" / "archive.mbox", relpath="archive.mbox")
        assert [d.id for d in docs] == ["mail:archive.mbox:0", "mail:archive.mbox:1", "mail:archive.mbox:2"]
        assert docs[0].text == "First message body.\nFrom the archive, an escaped line."
        assert [d.title for d in docs] == ["first", "second", "(no subject)"]
        assert docs[1].metadata["message_id"] == "m2@example.com"

    def test_unknown_and_mislabelled_charsets(self, tmp_path: Path) -> None:
        """An unknown charset falls back to UTF-8; 8-bit text labelled us-ascii reads as windows-1252."""
        unknown = tmp_path / "unknown.eml"
        unknown.write_bytes(
            b"From: a@example.com\nSubject: x\nContent-Type: text/plain; charset=x-klingon\n\n"
            + "naïve café 東京".encode()
        )
        assert _one(unknown).text == "naïve café 東京"
        mislabelled = tmp_path / "ascii.eml"
        mislabelled.write_bytes(
            b"From: a@example.com\nSubject: x\nContent-Type: text/plain; charset=us-ascii\n\n"
            b"\x93smart quotes\x94 cost \x8010"
        )
        assert _one(mislabelled).text == "\u201csmart quotes\u201d cost \u20ac10"


class TestBadInput:
    """Files that are not mail fail with a reason instead of producing junk documents."""

    def test_binary_junk(self, tmp_path: Path) -> None:
        """Binary data is refused."""
        junk = tmp_path / "junk.eml"
        junk.write_bytes(bytes(range(256)) * 8)
        with pytest.raises(IngestError, match="binary data"):
            _load(junk)

    def test_empty_file(self, tmp_path: Path) -> None:
        """An empty (or whitespace-only) file is refused."""
        empty = tmp_path / "empty.eml"
        empty.write_bytes(b"\n \n")
        with pytest.raises(IngestError, match="empty file"):
            _load(empty)

    def test_plain_text_is_not_mail(self, tmp_path: Path) -> None:
        """Text without mail headers is refused, even when a line looks like "key: value"."""
        text = tmp_path / "notes.txt"
        text.write_text("shopping list\nmilk: 2 litres\n", encoding="utf-8")
        with pytest.raises(IngestError, match="no mail headers"):
            _load(text)

    def test_bad_message_in_mbox_is_skipped(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        """A headerless message inside an mbox is logged and skipped; its neighbours keep their ids."""
        mbox = tmp_path / "inbox.mbox"
        mbox.write_bytes(
            b"From a@example.com Mon Apr  1 10:00:00 2024\nFrom: a@example.com\nSubject: one\n\nfirst\n\n"
            b"From b@example.com Mon Apr  1 11:00:00 2024\njust text, no headers\n\n"
            b"From c@example.com Mon Apr  1 12:00:00 2024\nFrom: c@example.com\nSubject: three\n\nthird\n"
        )
        with caplog.at_level(logging.WARNING, logger="stanchion.ingest.loaders.email"):
            docs = _load(mbox, relpath="inbox.mbox")
        assert [d.id for d in docs] == ["mail:inbox.mbox:0", "mail:inbox.mbox:2"]
        assert [r.__dict__["index"] for r in caplog.records if r.getMessage() == "email.bad_message"] == [1]

    def test_oversized(self, fixtures: Path) -> None:
        """A file above the context's byte limit is refused before it is read."""
        ctx = LoadContext(source="mail", relpath="big", max_file_bytes=100)
        with pytest.raises(IngestError, match="exceeds the 100-byte limit"):
            list(load_email(fixtures / "email" / "reply.eml", ctx))


class TestHelpers:
    """The pure functions behind the loader."""

    def test_bottom_posted_reply_keeps_text_after_the_quote(self) -> None:
        """An attribution followed by "> " quotes removes only the quote, so bottom-posts survive."""
        text = "On Mon, Bob wrote:\n> question?\nmy answer below the quote\n-- \nsig"
        assert strip_reply(text) == "my answer below the quote"

    def test_forwarded_headers_are_kept(self) -> None:
        """A From:/Subject: block under a "Forwarded" marker is content, not a quote."""
        text = "FYI\n----- Forwarded Message -----\nFrom: x@example.com\nSubject: news\n\nthe news"
        assert strip_reply(text) == text

    def test_bare_dashes_far_from_the_end_are_content(self) -> None:
        """A "--" line followed by many lines is a separator, not a signature."""
        text = "intro\n--\n" + "\n".join(f"line {i}" for i in range(30))
        assert strip_reply(text) == text

    def test_decode_bytes_never_raises(self) -> None:
        """Bytes invalid under their label fall through to wider charsets, then to replacement."""
        assert decode_bytes(b"\xff\xfe\xfa", "utf-8") == "ÿþú"  # windows-1252
        assert decode_bytes("東京".encode("gb18030"), "gb2312") == "東京"  # GB18030 extends GB2312
        assert decode_bytes(b"\x81\x8d", "utf-8") == "\ufffd\ufffd"  # invalid in windows-1252 too
