"""API key material, and scrubbing of secrets from text that is stored or logged."""

from __future__ import annotations

import hashlib
import re
import secrets

KEY_PREFIX = "sk-stn-"
_SECRET_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_-]{16,}"  # OpenAI / Anthropic / Stanchion style keys
    r"|(?:Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{12,}"
    r"|AKIA[0-9A-Z]{16}"  # AWS access key ids
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"  # JWTs
    r"|(?:postgres(?:ql)?|redis|mysql)://[^\s:@/]*:[^\s@/]+@)"  # URLs with a password
)


def new_key() -> tuple[str, str]:
    """(key id, secret). The secret is shown once; only ``key_hash(secret)`` is stored."""
    key_id = "key_" + secrets.token_hex(8)
    return key_id, KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(secret: str) -> str:
    # Keys carry 256 random bits, so a fast hash suffices: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[: len(KEY_PREFIX) + 4] + "..."


def redact(text: str) -> str:
    """Replace anything that looks like a credential with ``[REDACTED]``."""
    return _SECRET_PATTERNS.sub("[REDACTED]", text)
