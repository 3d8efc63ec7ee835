"""The ASGI entry point uvicorn imports in every worker: ``stanchion.server.asgi:app_factory``.

``stanchion serve`` passes the spec file through ``STANCHION_SPEC`` (workers are fresh processes).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fastapi import FastAPI

from stanchion.logs import configure_logging
from stanchion.server.app import create_app
from stanchion.spec import load_spec

SPEC_ENV = "STANCHION_SPEC"
LOG_LEVEL_ENV = "STANCHION_LOG_LEVEL"


def app_factory() -> FastAPI:
    configure_logging(getattr(logging, os.environ.get(LOG_LEVEL_ENV, "INFO").upper(), logging.INFO))
    spec_file = os.environ.get(SPEC_ENV)
    return create_app(load_spec(Path(spec_file) if spec_file else None))
