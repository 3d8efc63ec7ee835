"""``stanchion eval pii``: the overlap scorer, the --json keys on a small project-authored file in
the presidio-research layout, clear errors for a bad file, and a slice of the shared data set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stanchion.cli import app as cli_app
from stanchion.errors import SpecError
from stanchion.evals.pii import Labelled, evaluate, load_dataset, score_sentence, split
from stanchion.guards.recognizers import Found

SHARED = Path(__file__).resolve().parents[3] / "shared/data/presidio-synthetic-pii/synth_dataset_v2.json"


def _row(text: str, *spans: tuple[str, str]) -> dict[str, object]:
    out = []
    for kind, value in spans:
        start = text.index(value)
        out.append(
            {
                "entity_type": kind,
                "entity_value": value,
                "start_position": start,
                "end_position": start + len(value),
            }
        )
    return {"full_text": text, "masked": text, "spans": out, "template_id": 0, "metadata": None}


ROWS = [
    _row("My card 4111 1111 1111 1111 expired", ("CREDIT_CARD", "4111 1111 1111 1111")),
    _row("Mail Jane at jane.doe@example.com please", ("EMAIL_ADDRESS", "jane.doe@example.com")),
    _row("Wire it to GB82 WEST 1234 5698 7654 32", ("IBAN_CODE", "GB82 WEST 1234 5698 7654 32")),
    _row("Her SSN is 536-22-8726", ("US_SSN", "536-22-8726")),
    _row("Call +1-984-182-0190 after six", ("PHONE_NUMBER", "+1-984-182-0190")),
    _row(
        "The office of Acme is at 217 Lovers Lane",
        ("ORGANIZATION", "Acme"),
        ("STREET_ADDRESS", "217 Lovers Lane"),
    ),
    _row("What are my options?"),
]


def _dataset(tmp_path: Path) -> Path:
    path = tmp_path / "pii.json"
    path.write_text(json.dumps(ROWS), encoding="utf-8")
    return path


class TestScorer:
    def test_half_the_characters_decide_a_match(self) -> None:
        """A prediction covering half of a gold span finds it; one covering less does not."""
        item = Labelled("at 217 Lovers Lane now", ((3, 18, "LOCATION"),))
        half = score_sentence(item, [Found(3, 13, "STREET_ADDRESS", 0.9)])["LOCATION"]
        assert (half.found, half.right) == (1, 1)
        little = score_sentence(item, [Found(3, 6, "LOCATION", 0.9)])["LOCATION"]
        assert (little.found, little.right) == (0, 1)

    def test_a_wrong_type_is_a_miss_and_a_false_positive(self) -> None:
        item = Labelled("Jordan called", ((0, 6, "PERSON"),))
        counts = score_sentence(item, [Found(0, 6, "LOCATION", 0.9)])
        assert counts["PERSON"].found == 0 and counts["LOCATION"].right == 0

    def test_unscored_types_are_dropped(self) -> None:
        """DATE_TIME and ORGANIZATION are not scored: predicting them costs nothing."""
        assert score_sentence(Labelled("on Monday", ()), [Found(3, 9, "DATE_TIME", 0.9)]) == {}

    def test_f2_weighs_recall(self) -> None:
        rows = [Labelled("a b", ((0, 1, "PERSON"), (2, 3, "PERSON")))]
        report = evaluate(rows, lambda text: [Found(0, 1, "PERSON", 1.0)])
        assert report["precision"] == 1.0 and report["recall"] == 0.5
        assert report["f2"] == pytest.approx(5 * 0.5 / (4 + 0.5), abs=1e-4)


class TestDataset:
    def test_types_are_mapped_and_unknown_ones_left_out(self, tmp_path: Path) -> None:
        rows = load_dataset(_dataset(tmp_path))
        assert len(rows) == 7
        assert [t for *_, t in rows[5].spans] == ["LOCATION"]  # STREET_ADDRESS; ORGANIZATION not scored

    def test_parts_split_seventy_thirty(self, tmp_path: Path) -> None:
        rows = load_dataset(_dataset(tmp_path))
        assert len(split(rows, "tune")) == 5 and len(split(rows, "held-out")) == 2
        with pytest.raises(SpecError, match="held-out"):
            split(rows, "test")

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            ("not json", "is not JSON"),
            ('{"a": 1}', "JSON list"),
            ('[{"text": "x"}]', "full_text"),
            (
                '[{"full_text": "ab", "spans": [{"entity_type": "PERSON", "start_position": 0, "end_position": 9}]}]',
                "outside",
            ),
        ],
    )
    def test_bad_files_are_named_with_what_is_wrong(self, tmp_path: Path, content: str, message: str) -> None:
        path = tmp_path / "bad.json"
        path.write_text(content, encoding="utf-8")
        with pytest.raises(SpecError, match=message):
            load_dataset(path)


class TestCli:
    def test_json_report(self, tmp_path: Path) -> None:
        result = CliRunner().invoke(cli_app, ["eval", "pii", "--dataset", str(_dataset(tmp_path)), "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert {"precision", "recall", "f2", "latency_ms", "per_entity"} <= set(report)
        for kind in ("CREDIT_CARD", "EMAIL_ADDRESS", "IBAN_CODE", "US_SSN", "PHONE_NUMBER"):
            assert report["per_entity"][kind] == {"precision": 1.0, "recall": 1.0, "f2": 1.0, "support": 1}
        assert set(report["per_entity"]["LOCATION"]) == {"precision", "recall", "f2", "support"}

    def test_baseline_is_scored_beside_ours(self, tmp_path: Path) -> None:
        args = ["eval", "pii", "--dataset", str(_dataset(tmp_path)), "--baseline", "presidio", "--json"]
        result = CliRunner().invoke(cli_app, args)
        assert result.exit_code == 0, result.output
        baseline = json.loads(result.stdout)["baseline"]
        assert baseline["name"] == "presidio" and 0.0 <= baseline["f2"] <= 1.0
        assert baseline["per_entity"]["EMAIL_ADDRESS"]["recall"] == 1.0

    def test_table_and_usage_errors(self, tmp_path: Path) -> None:
        result = CliRunner().invoke(cli_app, ["eval", "pii", "--dataset", str(_dataset(tmp_path))])
        assert result.exit_code == 0 and "overall" in result.stdout
        result = CliRunner().invoke(cli_app, ["eval", "pii", "--dataset", str(tmp_path / "none.json")])
        assert result.exit_code == 2 and "not found" in " ".join(
            result.output.split()
        )  # Rich wraps long lines
        bad = ["eval", "pii", "--dataset", str(_dataset(tmp_path)), "--baseline", "llmguard"]
        result = CliRunner().invoke(cli_app, bad)
        assert result.exit_code == 2 and "presidio" in result.output


@pytest.mark.skipif(not SHARED.is_file(), reason=f"shared data set absent: {SHARED}")
def test_a_slice_of_the_shared_data_set(tmp_path: Path) -> None:
    """The first 60 held-out sentences: the validated entities are all found."""
    rows = split(load_dataset(SHARED), "held-out")[:60]
    from stanchion.evals.pii import ours
    from stanchion.guards.pii import PiiDetector

    report = evaluate(rows, ours(PiiDetector()))
    for kind in ("CREDIT_CARD", "EMAIL_ADDRESS", "IBAN_CODE", "US_SSN"):
        if kind in report["per_entity"]:
            assert report["per_entity"][kind]["recall"] == 1.0, kind
    assert report["recall"] > 0.5
