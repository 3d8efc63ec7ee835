"""Control-plane state shared by every worker: API keys, ingest jobs, the audit log.

SQLite beside the index for the embedded default, the index's PostgreSQL in production; the same
SQL runs on both (see ``db.py``).
"""

from stanchion.state.records import ApiKey, AuditRecord, Job, Principal
from stanchion.state.store import StateStore, open_state

__all__ = ["ApiKey", "AuditRecord", "Job", "Principal", "StateStore", "open_state"]
