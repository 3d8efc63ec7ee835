"""The spec: defaults, strict keys, error messages that name the key path, ${ENV} interpolation."""

from __future__ import annotations

from pathlib import Path

import pytest

from stanchion.errors import SpecError
from stanchion.spec import load_spec, parse_spec


def error_of(data: object) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return str(info.value)


class TestValidation:
    def test_defaults_work_without_a_spec(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        spec = load_spec()
        assert spec.retrieval.mode == "hybrid" and spec.embedding.model == "all-MiniLM-L6-v2"
        assert spec.resolve(spec.index.path) == tmp_path / ".stanchion/index.db"

    def test_overlap_must_be_below_size(self) -> None:
        msg = error_of(
            {
                "sources": [
                    {"name": "a", "path": "x"},
                    {"name": "b", "path": "y", "chunking": {"size": 512, "overlap": 900}},
                ]
            }
        )
        assert msg == "sources[1].chunking.overlap: 900 must be smaller than size (512)"

    def test_unknown_key_named_with_allowed_keys(self) -> None:
        msg = error_of({"sources": [{"name": "a", "path": "x", "chunkin": {}}]})
        assert msg.startswith("sources[0].chunkin: unknown key 'chunkin'")
        assert "chunking" in msg

    def test_bad_enum_value_lists_choices(self) -> None:
        msg = error_of({"retrieval": {"mode": "fast"}})
        assert msg.startswith("retrieval.mode: 'fast' is not allowed") and "'hybrid'" in msg

    def test_duplicate_source_names(self) -> None:
        assert "used twice" in error_of({"sources": [{"name": "a", "path": "x"}, {"name": "a", "path": "y"}]})

    def test_not_a_mapping(self) -> None:
        assert "mapping" in error_of(["a", "b"])


class TestFiles:
    def test_env_interpolation(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("KESTREL_DOCS", "/srv/docs")
        (tmp_path / "stanchion.yaml").write_text(
            "sources:\n  - name: wiki\n    path: ${KESTREL_DOCS}/wiki\n    metadata: {env: '${DEPLOY_ENV:-dev}'}\n"
        )
        spec = load_spec(tmp_path / "stanchion.yaml")
        assert spec.sources[0].path == "/srv/docs/wiki" and spec.sources[0].metadata["env"] == "dev"

    def test_missing_env_var_is_named(self, tmp_path: Path) -> None:
        (tmp_path / "s.yaml").write_text("index:\n  path: ${STANCHION_TEST_UNSET_VAR}\n")
        with pytest.raises(
            SpecError, match=r"index.path: environment variable STANCHION_TEST_UNSET_VAR is not set"
        ):
            load_spec(tmp_path / "s.yaml")

    def test_relative_paths_resolve_from_spec_folder(self, tmp_path: Path) -> None:
        (tmp_path / "s.yaml").write_text("sources:\n  - {name: docs, path: ./docs}\n")
        spec = load_spec(tmp_path / "s.yaml")
        assert spec.resolve(spec.sources[0].path) == tmp_path / "docs"

    def test_invalid_yaml(self, tmp_path: Path) -> None:
        (tmp_path / "s.yaml").write_text("sources: [unclosed\n")
        with pytest.raises(SpecError, match="not valid YAML"):
            load_spec(tmp_path / "s.yaml")

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(SpecError, match="stanchion init"):
            load_spec(tmp_path / "nope.yaml")

    def test_init_template_is_valid(self) -> None:
        from importlib.resources import files

        import yaml

        data = yaml.safe_load(files("stanchion").joinpath("templates/stanchion.yaml").read_text())
        spec = parse_spec(data)
        assert spec.sources[0].chunking.size == 256


def test_openai_embeddings_need_a_base_url() -> None:
    msg = error_of({"embedding": {"provider": "openai", "model": "text-embedding-3-small"}})
    assert msg.startswith("embedding.base_url: the openai embedding provider needs a base_url")


def test_a_route_cache_is_checked_key_by_key() -> None:
    routes = {"default": {"models": ["extractive"], "cache": {"ttl": 60}}}
    assert error_of({"routes": routes}).startswith("routes.default.cache.ttl: unknown key 'ttl'")
    routes["default"]["cache"] = {"threshold": 1.5}
    assert error_of({"routes": routes}).startswith("routes.default.cache.threshold:")
    routes["default"]["cache"] = {"scope": "group"}
    assert error_of({"routes": routes}).startswith("routes.default.cache.scope:")
    spec = parse_spec({"routes": {"default": {"models": ["extractive"], "cache": {}}}})
    cache = spec.routes["default"].cache
    assert cache is not None and cache.exact and cache.scope == "tenant"
    assert cache.semantic is None  # by route kind: on for grounded routes, off for gateway routes
    assert parse_spec({}).routes["default"].cache is None  # off unless asked for


def test_the_templates_commented_routes_are_valid_when_uncommented() -> None:
    from importlib.resources import files

    import yaml

    text = files("stanchion").joinpath("templates/stanchion.yaml").read_text()
    block = text[text.index("# routes:") : text.index("# The HTTP API")]
    routes = yaml.safe_load("\n".join(line.removeprefix("# ") for line in block.splitlines()))
    models = {"extractive": {"provider": "extractive"}, "gpt": {"provider": "extractive"},
              "local": {"provider": "extractive"}}  # fmt: skip
    spec = parse_spec({"models": models, **routes})
    assert spec.routes["gateway"].cache is not None and spec.routes["gateway"].cache.scope == "user"
