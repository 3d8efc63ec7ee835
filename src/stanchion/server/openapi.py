"""Models the OpenAPI document describes that no route returns as its body.

An event stream's events are JSON inside ``data:`` lines, so FastAPI never sees their model; the
schema names it (``contentSchema``) and this adds it, with the models it uses, to the components.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

_REF = "#/components/schemas/{model}"


def describe_models(api: FastAPI, *models: type[BaseModel]) -> None:
    """Make ``api.openapi()`` include ``models`` under ``components.schemas``."""
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is not None:
            return api.openapi_schema
        document = generate()
        _, extra = models_json_schema([(m, "serialization") for m in models], ref_template=_REF)
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in extra.get("$defs", {}).items():
            components.setdefault(name, schema)  # one a route already uses is kept as FastAPI wrote it
        api.openapi_schema = document
        return document

    api.openapi = openapi  # type: ignore[method-assign]
