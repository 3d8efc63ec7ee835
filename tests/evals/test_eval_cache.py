"""``stanchion eval cache``: the three pair layouts, the JSON report, clear errors for a bad file,
and a small slice of MRPC when the shared data is there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from stanchion.cli import app as cli_app
from stanchion.errors import SpecError
from stanchion.evals.cache import evaluate_pairs
from stanchion.evals.pairs import Pair, adversarial_path, detect_layout, load_pairs

MRPC_HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
MRPC_ROWS = [
    ("1", "How do I reset my password?", "How can I reset my password?"),
    ("1", "How do I cancel my subscription?", "How can I cancel my subscription?"),
    ("0", "How do I enable SSO for my team?", "How do I disable SSO for my team?"),
    ("0", "Can I get a refund within 30 days?", "Can I get a refund within 60 days?"),
    ("0", "What was Q3 2024 revenue?", "What was Q3 2023 revenue?"),
]
STSB_ROWS = [
    ("5.000", "How do I reset my password?", "How can I reset my password?"),
    ("4.400", "Where can I download my invoices?", "Where do I download my invoices?"),
    ("3.000", "How do I export data?", "How do I export all of my data?"),  # left out: between
    ("1.000", "How do I reset my Outlook password?", "How do I reset my Gmail password?"),
    ("0.500", "Is the office open on Monday?", "Is the office open on Tuesday?"),
]


@pytest.fixture(autouse=True)
def _own_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Embeddings are cached under the test's own folder, not the user's."""
    monkeypatch.setenv("STANCHION_CACHE_DIR", str(tmp_path / "cache"))


def _mrpc(path: Path) -> Path:
    path.write_text(
        MRPC_HEADER + "".join(f"{q}\t{i}\t{i + 100}\t{a}\t{b}\n" for i, (q, a, b) in enumerate(MRPC_ROWS)),
        encoding="utf-8",
    )
    return path


def _stsb(path: Path) -> Path:
    path.write_text(
        "".join(
            f"main-forums\tproject\t2026\t{i:04d}\t{s}\t{a}\t{b}\n" for i, (s, a, b) in enumerate(STSB_ROWS)
        ),
        encoding="utf-8",
    )
    return path


def _run(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(cli_app, ["eval", "cache", *args, "--json"])
    assert result.exit_code == 0, result.output
    report: dict[str, object] = json.loads(result.stdout)
    return report


class TestLayouts:
    def test_detected(self, tmp_path: Path) -> None:
        assert detect_layout(_mrpc(tmp_path / "pairs.txt")) == "mrpc"
        assert detect_layout(_stsb(tmp_path / "sts.csv")) == "stsb"
        assert detect_layout(adversarial_path()) == "tsv"

    def test_stsb_keeps_only_clear_labels(self, tmp_path: Path) -> None:
        """STS-B scores >= 4 are 'same', <= 2 'different'; the pair at 3.0 is left out."""
        pairs = load_pairs(_stsb(tmp_path / "sts.csv"))
        assert [p.label for p in pairs] == [True, True, False, False]

    def test_neither_layout_is_a_clear_error(self, tmp_path: Path) -> None:
        other = tmp_path / "notes.txt"
        other.write_text("just some text\nand more\n", encoding="utf-8")
        with pytest.raises(SpecError, match="no known pair layout"):
            detect_layout(other)
        with pytest.raises(SpecError, match="no pair file"):
            detect_layout(tmp_path)

    def test_bad_row_names_the_line(self, tmp_path: Path) -> None:
        broken = tmp_path / "pairs.tsv"
        broken.write_text(
            "label\tkind\tquestion_a\tquestion_b\n1\tparaphrase\tonly one side\n", encoding="utf-8"
        )
        with pytest.raises(SpecError, match=r"pairs.tsv:2"):
            load_pairs(broken)


class TestReport:
    def test_counts_and_curve(self) -> None:
        """Precision, recall and the curve come from the verdicts; a rule's rejection is counted."""
        pairs = [
            Pair(True, "How do I reset my password?", "How can I reset my password?"),
            Pair(False, "How do I enable SSO?", "How do I disable SSO?"),
            Pair(True, "How do I cancel my plan?", "Tell me everything about the company"),
        ]
        report = evaluate_pairs(pairs, np.array([0.97, 0.95, 0.3], dtype=np.float32), threshold=0.8)
        assert (report.hits, report.false_hits, report.precision, report.recall) == (1, 0, 1.0, 0.5)
        assert report.by_reason == {"negation": 1}
        assert report.cosine.precision == 0.5  # cosine alone takes the negated pair
        point = next(p for p in report.curve if p["threshold"] == 0.8)
        assert point["matcher"] == {"precision": 1.0, "recall": 0.5}


class TestCommand:
    """The CLI end to end with the real embedder, on small project-authored files."""

    def test_mrpc_file(self, tmp_path: Path) -> None:
        report = _run("--pairs", str(_mrpc(tmp_path / "pairs.txt")))
        assert {"precision", "recall", "threshold", "pairs", "curve", "by_reason", "latency_ms"} <= set(
            report
        )
        assert report["pairs"] == 5
        assert report["false_hits"] == 0
        assert report["precision"] == 1.0
        assert report["recall"] == 1.0
        assert report["by_reason"] == {"negation": 1, "number": 1, "date": 1}

    def test_stsb_file_with_threshold(self, tmp_path: Path) -> None:
        report = _run("--pairs", str(_stsb(tmp_path / "sts.csv")), "--layout", "stsb", "--threshold", "0.85")
        assert report["pairs"] == 4
        assert report["threshold"] == 0.85
        assert report["false_hits"] == 0

    def test_bad_file_exits_2_with_the_reason(self, tmp_path: Path) -> None:
        other = tmp_path / "notes.txt"
        other.write_text("just some text\n", encoding="utf-8")
        result = CliRunner().invoke(cli_app, ["eval", "cache", "--pairs", str(other)])
        assert result.exit_code == 2
        assert "no known pair layout" in " ".join(result.output.split())  # Rich wraps long lines

    def test_bad_threshold_exits_2(self) -> None:
        result = CliRunner().invoke(cli_app, ["eval", "cache", "--threshold", "3"])
        assert result.exit_code == 2
        assert "between -1 and 1" in " ".join(result.output.split())


class TestSharedData:
    def test_mrpc_slice(self, shared_data: Path, tmp_path: Path) -> None:
        """The first 40 MRPC train pairs run through the command and give sane figures."""
        source = shared_data / "mrpc" / "msr_paraphrase_train.txt"
        if not source.is_file():
            pytest.skip(f"{source} not found")
        lines = source.read_text(encoding="utf-8-sig").splitlines()[:41]
        sliced = tmp_path / "mrpc40.txt"
        sliced.write_text("\n".join(lines) + "\n", encoding="utf-8")
        report = _run("--pairs", str(sliced))
        assert report["pairs"] == 40
        assert 0.0 <= float(str(report["recall"])) <= 1.0
        assert len(report["curve"]) >= 10  # type: ignore[arg-type]
