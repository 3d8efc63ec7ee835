"""Uploaded files: the one rule for their names, and where their documents live.

Every upload of a tenant is one unit of the source ``upload.<tenant>``, named
``<job id>-<file name>``, so its document ids are ``upload.<tenant>:<job id>-<file name>[:part]``.
The job id makes the unit unique per upload: two uploads never share a document id, whatever their
names, and an upload never replaces a document. Replacing one is explicit
(``POST /v1/documents?replace=<id>``): the new file is ingested into that document's unit, keeping
its ids, once the server has checked that the caller may see every document of the unit.

``clean_filename`` is the only place a client's file name is read: jobs, document ids and audit
records all show what it returns.
"""

from __future__ import annotations

import re
import unicodedata

from stanchion.spec import UPLOAD_SOURCE_PREFIX
from stanchion.state.secrets import redact
from stanchion.types import unstorable

__all__ = [
    "FILENAME_PATTERN",
    "UPLOAD_SOURCE_PREFIX",
    "clean_filename",
    "upload_job",
    "upload_source_name",
    "upload_unit",
]

# Characters a file name may not hold: C0 and C1 controls (NUL included), DEL, and the invisible
# formatting characters that make a name read differently from what it is (bidirectional
# overrides and isolates such as U+202E, zero-width characters, the byte-order mark). Spelled as a
# class that Python and JSON Schema (ECMA 262) read alike; the OpenAPI schema carries it.
_FORBIDDEN = (
    r"\x00-\x1f\x7f-\x9f\u00ad\u061c\u115f\u1160\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    r"\ufeff\ufff9-\ufffb"
)
FILENAME_PATTERN = f"^[^{_FORBIDDEN}]*$"
_FORBIDDEN_CHAR = re.compile(f"[{_FORBIDDEN}]")
# Bytes of a cleaned name: with the job id in front it stays under the usual 255-byte limit of a
# file name on disk.
MAX_NAME_BYTES = 200
_MAX_SUFFIX_BYTES = 16
DEFAULT_NAME = "upload"


def upload_source_name(tenant: str) -> str:
    """The source that holds a tenant's uploads (a tenant's keys see only their own tenant)."""
    return UPLOAD_SOURCE_PREFIX + tenant


def upload_unit(job_id: str, filename: str) -> str:
    """The unit, and so the document id after ``upload.<tenant>:``, of a new upload."""
    return f"{job_id}-{filename}"


def upload_job(unit: str) -> str | None:
    """The id of the job whose upload made ``unit`` (``upload_unit``'s inverse); None for a unit
    named otherwise (an upload from before job ids were part of the name)."""
    job_id, sep, _ = unit.partition("-")
    return job_id if sep and job_id.startswith("job_") else None


def clean_filename(name: str) -> str:
    """The name an uploaded file is known by; ``ValueError`` when it holds a control or invisible
    formatting character (``FILENAME_PATTERN``) or is no storable text (``types.unstorable``).

    Otherwise: NFC-normalised; the last path component only (``/`` or ``\\``); anything that looks
    like a credential replaced by ``[REDACTED]`` (as in the audit log); ``:`` (the separator of
    document ids) as ``_``; leading dots and surrounding white space dropped; cut to
    ``MAX_NAME_BYTES`` of UTF-8, keeping the extension; ``upload`` when nothing is left. Applying it
    twice changes nothing.
    """
    if problem := unstorable(name):  # the rule for all text from outside (a lone surrogate)
        raise ValueError(f"the file name {problem}")
    bad = _FORBIDDEN_CHAR.search(name)
    if bad is not None:
        raise ValueError(
            f"the file name holds U+{ord(bad.group()):04X}: control characters and invisible "
            "formatting characters (bidirectional overrides, zero-width characters) are refused"
        )
    base = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    base = redact(base).replace(":", "_").strip().lstrip(".").strip()
    return _fit(base) or DEFAULT_NAME


def _fit(name: str) -> str:
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    suffix = dot + ext if stem and len((dot + ext).encode()) <= _MAX_SUFFIX_BYTES else ""
    head = name[: len(name) - len(suffix)].encode()[: MAX_NAME_BYTES - len(suffix.encode())]
    return head.decode("utf-8", "ignore").rstrip() + suffix
