"""Structured logging: one JSON object per line on stderr, fields passed with ``extra=``."""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar

# The id of the HTTP request being served, added to every log line written while serving it.
request_id: ContextVar[str] = ContextVar("request_id", default="")

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        if rid := request_id.get():
            entry["request_id"] = rid
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: int = logging.WARNING) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("stanchion")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # Libraries below us print progress bars and hub warnings we do not want in user output.
    for noisy in ("transformers", "sentence_transformers", "huggingface_hub", "pypdf"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
