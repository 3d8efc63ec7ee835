"""The README's ``stanchion`` commands: each means in bash what it says, and the safe ones run.

Every line of a ```bash block that starts with ``stanchion`` is run through bash with
``stanchion`` defined as a function that prints its arguments: an unquoted ``>`` (a redirection)
or ``$5`` (a parameter) changes what the program would get, and the argv no longer matches the
line as written (POSIX shlex, which expands nothing). The commands that only read or write a
local index and state then run against a copy of the bundled sample corpus, as a user would.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stanchion.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
# Commands that need what a test cannot give: a terminal, a server, shared data sets, a network.
NOT_RUN = ("stanchion serve", "stanchion chat", "stanchion bench", "stanchion eval")
# Documented commands with a placeholder (by their arguments), and what they answer here instead of 0.
EXPECTED_EXIT = {
    ("stanchion", "ask", "...", "--route", "auto", "--k", "6", "--json"): 2,  # the sample has no `auto`
    ("stanchion", "keys", "revoke", "key_0123abcd"): 2,  # an example id: no such key
}


def readme_commands() -> list[str]:
    """Every ``stanchion ...`` line of the README's bash blocks, comments included."""
    commands: list[str] = []
    fence = ""
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fence = "" if fence else (line[3:].strip() or "none")
            continue
        if fence == "bash" and line.startswith("stanchion "):
            commands.append(line)
    return commands


COMMANDS = readme_commands()


def _argv(line: str) -> list[str]:
    return shlex.split(line, comments=True)


def _bash_argv(line: str, cwd: Path) -> list[str]:
    """What bash passes to ``stanchion`` for ``line``; redirections land in ``cwd``."""
    script = "stanchion() { printf '%s\\0' \"$@\"; }\n" + line
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", script],
        cwd=cwd,
        capture_output=True,
        env={"PATH": os.environ["PATH"]},  # nothing for $VAR to pick up
        check=False,
    )
    assert result.returncode == 0, f"bash rejects {line!r}: {result.stderr.decode()}"
    return ["stanchion", *result.stdout.decode().split("\0")[:-1]]


def test_the_readme_has_commands() -> None:
    assert len(COMMANDS) >= 15
    assert any("created_at>=" in c for c in COMMANDS) and any("$5,000" in c for c in COMMANDS)


@pytest.mark.parametrize("line", COMMANDS)
def test_bash_passes_what_the_line_says(line: str, tmp_path: Path) -> None:
    """Pasted into bash, the command gets exactly the arguments written (nothing expanded or redirected)."""
    assert _bash_argv(line, tmp_path) == _argv(line)
    assert not list(tmp_path.iterdir()), f"{line!r} redirected output into a file"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the bundled sample corpus with its spec, and the Slack export also as a zip."""
    root = tmp_path_factory.mktemp("readme") / "kestrel"
    shutil.copytree(Path(str(files("stanchion").joinpath("sample"))), root)
    (root / "exports").mkdir()
    shutil.make_archive(str(root / "exports" / "slack"), "zip", root / "slack")
    return root


def _run(line: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    result = CliRunner().invoke(app, _argv(line)[1:], input="y\n")  # `audit prune` asks first
    return result.exit_code, result.stdout, result.stderr


def test_readme_commands_run(sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runnable commands, in README order, against the sample corpus: each exits as documented."""
    code, _, err = _run("stanchion init", tmp_path, monkeypatch)
    assert code == 0 and (tmp_path / "stanchion.yaml").is_file(), err
    ran: dict[str, str] = {}
    for line in COMMANDS:
        if line.startswith(("stanchion init", *NOT_RUN)):
            continue
        code, out, err = _run(line, sample, monkeypatch)
        assert code == EXPECTED_EXIT.get(tuple(_argv(line)), 0), f"{line}\nstdout: {out}\nstderr: {err}"
        ran[line] = err
        if "--json" in _argv(line) and code == 0:
            json.loads(out)  # one JSON document, nothing else on stdout
        if line.startswith(("stanchion search", "stanchion ask")):
            assert "no results" not in out and "hint" not in out + err, f"{line} found nothing:\n{out}"
    assert len(ran) >= 12
    # The documented key is for the tenant the sample's sources use: no warning that it sees nothing.
    [key_err] = [err for line, err in ran.items() if line.startswith("stanchion keys create")]
    assert "warning" not in key_err


def test_ingest_with_paths_adds_them_to_the_spec_sources(
    sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ingest ./exports/slack.zip ./wiki``: ./wiki is the spec's wiki source, the zip a new one."""
    line = next(c for c in COMMANDS if re.match(r"stanchion ingest \S+\.zip", c))
    code, out, _ = _run(line, sample, monkeypatch)
    summary = json.loads(out)
    assert code == 0 and not summary["failed"] and not summary["warnings"]
    assert summary["deleted"] == 0  # the zip's source never replaces the spec's `slack`
    assert summary["units"] >= 16  # every spec source was looked at, and the zip
