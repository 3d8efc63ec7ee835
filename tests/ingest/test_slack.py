"""The Slack export loader, on a real export and on a small hand-written one."""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path

import pytest

from stanchion.errors import IngestError
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.loaders.slack import load_slack
from stanchion.types import Document

CTX = LoadContext(source="slack", relpath="export", access_groups=("staff",))


def _zip(folder: Path, target: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, prefix + file.relative_to(folder).as_posix())
    return target


def _by_id(docs: list[Document]) -> dict[str, Document]:
    return {doc.id: doc for doc in docs}


@pytest.fixture(scope="module")
def real_docs(shared_data: Path) -> list[Document]:
    return list(load_slack(shared_data / "slack-export-sample" / "extracted", CTX))


@pytest.fixture(scope="module")
def fixture_docs(fixtures: Path) -> dict[str, Document]:
    return _by_id(list(load_slack(fixtures / "slack" / "export", CTX)))


class TestRealExport:
    """The hfaran/slack-export-viewer test archive: 158 messages, 2 channels, bots and joins."""

    def test_zip_and_folder_agree(self, shared_data: Path, real_docs: list[Document]) -> None:
        """The .zip and its extracted folder give identical documents."""
        zipped = list(load_slack(shared_data / "slack-export-sample" / "testarchive.zip", CTX))
        assert zipped == real_docs

    def test_noise_is_dropped(self, real_docs: list[Document]) -> None:
        """Joins, bot posts, integration notices and empty bot messages never reach the index."""
        # 158 messages - 94 bot_message - 8 channel_join - 3 bot_add = 53 human messages.
        assert sum(doc.metadata["message_count"] for doc in real_docs) == 53
        text = "\n".join(doc.text for doc in real_docs)
        assert "has joined the channel" not in text
        assert "added an integration" not in text
        assert "commented on" not in text  # the file-comment wrapper; its comment body stays

    def test_user_ids_resolve_to_names(self, real_docs: list[Document]) -> None:
        """Authors and <@U...> mentions become real names; no raw id or markup survives."""
        first = _by_id(real_docs)["slack:export:enrique:1452837352.000006"]
        assert first.sections[0].text.startswith(
            "Hamza Faran: @Harry Potter: Created an issue for a setup.py"
        )
        assert first.metadata["author"] == "Hamza Faran"
        assert all("<@U" not in doc.text and "<http" not in doc.text for doc in real_docs)

    def test_entities_and_links_are_readable(self, real_docs: list[Document]) -> None:
        """&gt; is decoded and <url|label> keeps both label and URL."""
        quote = _by_id(real_docs)["slack:export:enrique:1458228721.000002"]
        assert quote.text.startswith('heroeshannibal: >"Essentially')
        run = _by_id(real_docs)["slack:export:traveling-sailor:1459113341.000019"]
        assert "Best fitness: 28919.8689279" in run.text  # <tel:x|x> collapses to its label

    def test_conversations_split_on_silence(self, real_docs: list[Document]) -> None:
        """Top-level messages an hour apart land in different conversations, minutes apart in one."""
        morning = _by_id(real_docs)["slack:export:enrique:1452845865.000008"]
        assert morning.metadata["message_count"] == 4  # 08:17..08:20; the 09:20 message starts anew
        assert morning.metadata["participants"] == ["Harry Potter", "Hamza Faran"]
        assert morning.metadata["created_at"] == "2016-01-15T08:17:45+00:00"
        assert morning.metadata["updated_at"] == "2016-01-15T08:20:25+00:00"
        assert morning.title == "#enrique — 2016-01-15 08:17"
        assert morning.access_groups == ("staff", "slack:enrique")
        assert "slack:export:enrique:1452849641.000013" in _by_id(real_docs)

    def test_gap_is_configurable(self, shared_data: Path, real_docs: list[Document]) -> None:
        """A one-day gap merges what a 30-minute gap splits."""
        merged = list(load_slack(shared_data / "slack-export-sample" / "extracted", CTX, gap_minutes=24 * 60))
        assert len(merged) < len(real_docs)
        assert sum(d.metadata["message_count"] for d in merged) == 53


class TestFixtureExport:
    """A hand-written export with a thread spanning two days, mentions, files and bots."""

    def test_thread_is_one_document(self, fixture_docs: dict[str, Document]) -> None:
        """A root and its replies, even those in a later day file, form one Document."""
        thread = fixture_docs["slack:export:general:1704103500.000700"]
        assert thread.text.split("\n") == [
            "Alice Liddell: Release plan for v2?",
            "Bob B: Ship on Friday",
            "carol: Friday works for me @Alice Liddell",
        ]
        assert thread.title == "#general — 2024-01-01 10:05 (thread)"
        assert thread.metadata["thread"] is True
        assert thread.metadata["updated_at"] == "2024-01-02T10:00:00+00:00"
        assert thread.sections[2].metadata == {"author": "carol", "ts": "2024-01-02T10:00:00+00:00"}

    def test_thread_root_is_not_repeated_in_the_channel_flow(self, fixture_docs: dict[str, Document]) -> None:
        """The conversation around a thread excludes the thread's root, and keeps unknown users by profile."""
        flow = fixture_docs["slack:export:general:1704103200.000200"]
        assert flow.metadata["participants"] == ["Alice Liddell", "Bob B", "Dan External"]
        assert "Release plan" not in flow.text

    def test_markup_is_rendered(self, fixture_docs: dict[str, Document]) -> None:
        """Mentions, channel links, labelled and bare URLs, broadcasts and entities read naturally."""
        flow = fixture_docs["slack:export:general:1704103200.000200"]
        assert flow.sections[0].text == (
            "Alice Liddell: Morning @Bob B! Notes are in the notes doc (https://example.com/notes), "
            "see #random and https://example.com/raw @here"
        )
        assert flow.sections[1].text == "Bob B: Thanks & noted <3"
        assert (
            fixture_docs["slack:export:random:1704103300.000100"].text
            == "Bob B: @channel pizza in the kitchen"
        )

    def test_bots_joins_and_empty_messages_are_dropped(self, fixture_docs: dict[str, Document]) -> None:
        """bot_message posts, users flagged is_bot, joins, leaves and empty text are all gone."""
        text = "\n".join(doc.text for doc in fixture_docs.values())
        for noise in ("Deploy finished", "I am a bot user", "has joined", "has left", "build ok"):
            assert noise not in text

    def test_file_messages_keep_only_content(self, fixture_docs: dict[str, Document]) -> None:
        """A file comment keeps its body under the commenter's name; a share names the file."""
        later = fixture_docs["slack:export:general:1704110400.001000"]
        assert later.text.split("\n") == [
            "Alice Liddell: Lunch anyone?",
            "carol: Looks good to me",
            "Alice Liddell: shared a file: plan.txt",
        ]

    def test_root_whose_replies_were_noise_is_ordinary(self, fixture_docs: dict[str, Document]) -> None:
        """A thread root with only a bot reply is a plain one-message conversation."""
        build = fixture_docs["slack:export:general:1704189700.000200"]
        assert build.metadata["thread"] is False
        assert build.metadata["message_count"] == 1

    def test_zip_with_top_level_folder(
        self, fixtures: Path, tmp_path: Path, fixture_docs: dict[str, Document]
    ) -> None:
        """A zip whose files sit under one folder loads the same as the folder."""
        archive = _zip(fixtures / "slack" / "export", tmp_path / "wrapped.zip", prefix="My Workspace Export/")
        assert _by_id(list(load_slack(archive, CTX))) == fixture_docs


class TestBadInput:
    """Broken exports fail with a reason, or skip only the broken part."""

    def test_corrupt_zip(self, tmp_path: Path) -> None:
        """Bytes that are not a zip raise IngestError saying so."""
        bad = tmp_path / "export.zip"
        bad.write_bytes(b"PK\x03\x04 this is not really a zip archive")
        with pytest.raises(IngestError, match="not a valid zip archive"):
            list(load_slack(bad, CTX))

    def test_missing_users_json(self, fixtures: Path, tmp_path: Path) -> None:
        """A folder without users.json is not a Slack export."""
        export = shutil.copytree(fixtures / "slack" / "export", tmp_path / "export")
        (export / "users.json").unlink()
        with pytest.raises(IngestError, match=r"not a Slack export: users\.json missing"):
            list(load_slack(export, CTX))

    def test_malformed_day_file_is_skipped(
        self, fixtures: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """One broken day file is logged and skipped; the rest of the export still loads."""
        export = shutil.copytree(fixtures / "slack" / "export", tmp_path / "export")
        (export / "general" / "2024-01-02.json").write_text('[{"type": "message", "text": ', encoding="utf-8")
        with caplog.at_level(logging.WARNING, logger="stanchion.ingest.loaders.slack"):
            docs = _by_id(list(load_slack(export, CTX)))
        bad = [r for r in caplog.records if r.getMessage() == "slack.bad_file"]
        assert [r.__dict__["file"] for r in bad] == ["general/2024-01-02.json"]
        assert "malformed JSON" in bad[0].__dict__["reason"]
        assert "slack:export:random:1704103300.000100" in docs
        assert docs["slack:export:general:1704103500.000700"].metadata["message_count"] == 2

    def test_nothing_readable(self, fixtures: Path, tmp_path: Path) -> None:
        """When every day file is broken the export fails rather than yielding nothing silently."""
        export = shutil.copytree(fixtures / "slack" / "export", tmp_path / "export")
        for day in export.glob("*/*.json"):
            day.write_text("{not json", encoding="utf-8")
        with pytest.raises(IngestError, match="none of the 3 day files could be read"):
            list(load_slack(export, CTX))

    def test_malformed_channels_json(self, fixtures: Path, tmp_path: Path) -> None:
        """A broken channels.json makes the whole export fail with the file named."""
        export = shutil.copytree(fixtures / "slack" / "export", tmp_path / "export")
        (export / "channels.json").write_text("[", encoding="utf-8")
        with pytest.raises(IngestError, match=r"channels\.json malformed JSON"):
            list(load_slack(export, CTX))

    def test_channel_name_cannot_escape_the_export(self, fixtures: Path, tmp_path: Path) -> None:
        """A channel named "../x" is ignored rather than read from outside the export folder."""
        outside = tmp_path / "x"
        outside.mkdir()
        (outside / "2024-01-01.json").write_text(
            '[{"user": "U01", "text": "leak", "ts": "1"}]', encoding="utf-8"
        )
        export = shutil.copytree(fixtures / "slack" / "export", tmp_path / "export")
        (export / "channels.json").write_text('[{"id": "C9", "name": "../x"}]', encoding="utf-8")
        assert list(load_slack(export, CTX)) == []

    def test_broken_surrogates_are_replaced(self, fixtures: Path, tmp_path: Path) -> None:
        """Half an emoji escaped in JSON becomes U+FFFD instead of text that cannot be stored."""
        export = shutil.copytree(fixtures / "slack" / "export", tmp_path / "export")
        (export / "random" / "2024-01-01.json").write_text(
            '[{"user": "U02", "text": "nice \\ud83d!", "ts": "1704103300.000100"}]', encoding="utf-8"
        )
        docs = _by_id(list(load_slack(export, CTX)))
        assert docs["slack:export:random:1704103300.000100"].text == "Bob B: nice \ufffd!"

    def test_missing_path(self, tmp_path: Path) -> None:
        """A path that does not exist is reported, not crashed on."""
        with pytest.raises(IngestError, match="no such file or folder"):
            list(load_slack(tmp_path / "nope.zip", CTX))
