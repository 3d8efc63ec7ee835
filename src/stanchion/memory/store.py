"""Where memories live: the ``MemoryStore`` protocol and its one implementation over the
control-plane ``Database`` (``state/db.py``), SQLite or PostgreSQL + pgvector.

Every statement is confined to one (tenant, user): the owner is part of each ``WHERE``, so no
call can read, change or delete another user's memory, whatever id it names. Vectors are ranked
exactly within the owner's rows: in numpy on SQLite, by pgvector's ``<=>`` on PostgreSQL.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from stanchion.errors import Conflict
from stanchion.memory.records import Candidate, Kind, MemoryRecord
from stanchion.memory.schema import migrate
from stanchion.state.db import Database, Row, Tx

Vector = npt.NDArray[np.float32]

_COLUMNS = (
    "id, tenant, user_id, kind, slot, text, value, negated, source, created_at, updated_at, "
    "superseded_by, superseded_at"
)
_OWNER = "tenant = ? AND user_id = ?"
# This many nearest by vector, plus those holding a keyword, are ranked by ``Memory.recall``.
CANDIDATES = 64


class MemoryStore(Protocol):
    """The memories of each (tenant, user); every method takes the owner and touches no other's."""

    def add(
        self, tenant: str, user: str, memory: Candidate, vector: Vector, *, source: str = ""
    ) -> MemoryRecord:
        """Store a new current memory; ``Conflict`` when its slot already has one."""
        ...

    def supersede(
        self, tenant: str, user: str, old_id: str, memory: Candidate, vector: Vector, *, source: str = ""
    ) -> MemoryRecord:
        """Store ``memory`` as current and keep ``old_id`` as its history, in one transaction."""
        ...

    def refresh(
        self, tenant: str, user: str, memory_id: str, memory: Candidate, vector: Vector, *, source: str = ""
    ) -> MemoryRecord | None:
        """Restate a current memory (same meaning, maybe new words): text and time updated."""
        ...

    def get(self, tenant: str, user: str, memory_id: str) -> MemoryRecord | None: ...

    def current(self, tenant: str, user: str, slot: str) -> MemoryRecord | None: ...

    def memories(self, tenant: str, user: str, *, include_history: bool = False) -> list[MemoryRecord]:
        """Newest first; current memories only unless ``include_history``."""
        ...

    def delete(self, tenant: str, user: str, memory_id: str) -> int:
        """Forget a memory; a current one goes with its history. How many rows went (0: none)."""
        ...

    def delete_all(self, tenant: str, user: str) -> int: ...

    def candidates(
        self, tenant: str, user: str, vector: Vector, keywords: Sequence[str]
    ) -> list[tuple[MemoryRecord, float]]:
        """Current memories worth ranking for a query, each with its cosine similarity to
        ``vector``: at least the nearest ones and those containing one of ``keywords``."""
        ...

    def close(self) -> None: ...


class DatabaseMemoryStore:
    """Memories in the ``memories`` table of a control-plane database (migrated on open)."""

    def __init__(self, db: Database, *, model: str = "", owns_db: bool = False) -> None:
        self.db = db
        self.model = model  # the embedder's name, stored beside each vector
        self._owns_db = owns_db
        self.applied = migrate(db)

    # --- writes ------------------------------------------------------------------------------------

    def add(
        self, tenant: str, user: str, memory: Candidate, vector: Vector, *, source: str = ""
    ) -> MemoryRecord:
        record = _new(tenant, user, memory, source)
        with self.db.transaction() as tx:
            self._insert(tx, record, vector)
        return record

    def supersede(
        self, tenant: str, user: str, old_id: str, memory: Candidate, vector: Vector, *, source: str = ""
    ) -> MemoryRecord:
        record = _new(tenant, user, memory, source)
        with self.db.transaction() as tx:
            changed = tx.execute(
                f"UPDATE memories SET superseded_by = ?, superseded_at = ? "
                f"WHERE {_OWNER} AND id = ? AND superseded_by IS NULL",
                (record.id, record.created_at, tenant, user, old_id),
            )
            if not changed:
                raise Conflict(f"memory {old_id} is no longer current; it cannot be superseded")
            self._insert(tx, record, vector)
        return record

    def refresh(
        self, tenant: str, user: str, memory_id: str, memory: Candidate, vector: Vector, *, source: str = ""
    ) -> MemoryRecord | None:
        with self.db.transaction() as tx:
            changed = tx.execute(
                f"UPDATE memories SET text = ?, value = ?, source = ?, updated_at = ?, embedding = "
                f"{self._param()}, dim = ? WHERE {_OWNER} AND id = ? AND superseded_by IS NULL",
                (
                    memory.text,
                    memory.value,
                    source,
                    time.time(),
                    self._encode(vector),
                    len(vector),
                    tenant,
                    user,
                    memory_id,
                ),
            )
            rows = tx.query(f"SELECT {_COLUMNS} FROM memories WHERE id = ?", (memory_id,)) if changed else []
        return _record(rows[0]) if rows else None

    def delete(self, tenant: str, user: str, memory_id: str) -> int:
        with self.db.transaction() as tx:
            rows = tx.query(
                f"SELECT slot, superseded_by FROM memories WHERE {_OWNER} AND id = ?",
                (tenant, user, memory_id),
            )
            if not rows:
                return 0
            slot, superseded_by = rows[0]
            if superseded_by is None:  # the current memory: its history goes with it
                return tx.execute(f"DELETE FROM memories WHERE {_OWNER} AND slot = ?", (tenant, user, slot))
            # A history entry: whatever it replaced is now replaced by its successor.
            tx.execute(
                f"UPDATE memories SET superseded_by = ? WHERE {_OWNER} AND superseded_by = ?",
                (superseded_by, tenant, user, memory_id),
            )
            return tx.execute(f"DELETE FROM memories WHERE {_OWNER} AND id = ?", (tenant, user, memory_id))

    def delete_all(self, tenant: str, user: str) -> int:
        return self.db.execute(f"DELETE FROM memories WHERE {_OWNER}", (tenant, user))

    # --- reads -------------------------------------------------------------------------------------

    def get(self, tenant: str, user: str, memory_id: str) -> MemoryRecord | None:
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM memories WHERE {_OWNER} AND id = ?", (tenant, user, memory_id)
        )
        return _record(rows[0]) if rows else None

    def current(self, tenant: str, user: str, slot: str) -> MemoryRecord | None:
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM memories WHERE {_OWNER} AND slot = ? AND superseded_by IS NULL",
            (tenant, user, slot),
        )
        return _record(rows[0]) if rows else None

    def memories(self, tenant: str, user: str, *, include_history: bool = False) -> list[MemoryRecord]:
        only_current = "" if include_history else " AND superseded_by IS NULL"
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM memories WHERE {_OWNER}{only_current} ORDER BY updated_at DESC, id",
            (tenant, user),
        )
        return [_record(r) for r in rows]

    def candidates(
        self, tenant: str, user: str, vector: Vector, keywords: Sequence[str]
    ) -> list[tuple[MemoryRecord, float]]:
        if self.db.dialect == "postgres":
            return self._pg_candidates(tenant, user, vector, keywords)
        rows = self.db.query(
            f"SELECT id, slot, text, dim, embedding FROM memories WHERE {_OWNER} AND superseded_by IS NULL",
            (tenant, user),
        )
        if not rows:
            return []
        scores = np.zeros(len(rows), dtype=np.float32)
        same = [i for i, r in enumerate(rows) if int(r[3]) == len(vector)]
        if same:
            matrix = np.frombuffer(b"".join(rows[i][4] for i in same), dtype=np.float32)
            scores[same] = matrix.reshape(len(same), len(vector)) @ vector
        # As on PostgreSQL: the nearest, and the nearest of those holding a keyword, are ranked.
        order = np.argsort(-scores).tolist()
        keep = set(order[:CANDIDATES])
        words = [k.lower() for k in keywords]
        holding = [i for i in order if any(w in f"{rows[i][2]} {rows[i][1]}".lower() for w in words)]
        keep.update(holding[:CANDIDATES])
        score_of = {rows[i][0]: float(scores[i]) for i in keep}
        marks = ", ".join("?" * len(score_of))
        records = self.db.query(
            f"SELECT {_COLUMNS} FROM memories WHERE {_OWNER} AND id IN ({marks})", (tenant, user, *score_of)
        )
        return [(_record(r), score_of[r[0]]) for r in records]

    def _pg_candidates(
        self, tenant: str, user: str, vector: Vector, keywords: Sequence[str]
    ) -> list[tuple[MemoryRecord, float]]:
        literal = self._encode(vector)
        similarity = "CASE WHEN dim = ? THEN 1 - (embedding <=> ?::vector) ELSE 0 END"
        where = f"{_OWNER} AND superseded_by IS NULL"
        nearest = (
            f"SELECT {_COLUMNS}, {similarity} FROM memories WHERE {where} AND dim = ? "
            "ORDER BY embedding <=> ?::vector LIMIT ?"
        )
        params: list[object] = [len(vector), literal, tenant, user, len(vector), literal, CANDIDATES]
        sql = f"({nearest})"
        if keywords:
            # Any text or slot holding one of the words; the caller ranks them.
            likes = " OR ".join(["lower(text || ' ' || slot) LIKE ?"] * len(keywords))
            sql += (
                f" UNION (SELECT {_COLUMNS}, {similarity} FROM memories WHERE {where} AND ({likes}) LIMIT ?)"
            )
            params += [len(vector), literal, tenant, user, *(f"%{_escape_like(k)}%" for k in keywords)]
            params.append(CANDIDATES)
        rows = self.db.query(sql, params)
        return [(_record(r), float(r[13])) for r in rows]

    def close(self) -> None:
        if self._owns_db:
            self.db.close()

    # --- helpers -----------------------------------------------------------------------------------

    def _insert(self, tx: Tx, record: MemoryRecord, vector: Vector) -> None:
        tx.execute(
            "INSERT INTO memories (id, tenant, user_id, kind, slot, text, value, negated, source, model, "
            f"dim, embedding, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {self._param()}, ?, ?)",
            (
                record.id,
                record.tenant,
                record.user,
                record.kind,
                record.slot,
                record.text,
                record.value,
                int(record.negated),
                record.source,
                self.model,
                len(vector),
                self._encode(vector),
                record.created_at,
                record.updated_at,
            ),
        )

    def _param(self) -> str:
        return "?::vector" if self.db.dialect == "postgres" else "?"

    def _encode(self, vector: Vector) -> object:
        vector = np.asarray(vector, dtype=np.float32)
        if self.db.dialect == "postgres":
            return "[" + ",".join(repr(float(x)) for x in vector) + "]"
        return vector.tobytes()


def _new(tenant: str, user: str, memory: Candidate, source: str) -> MemoryRecord:
    now = time.time()
    return MemoryRecord(
        id="mem_" + uuid.uuid4().hex,
        tenant=tenant,
        user=user,
        kind=memory.kind,
        slot=memory.slot,
        text=memory.text,
        value=memory.value,
        created_at=now,
        updated_at=now,
        source=source,
        negated=memory.negated,
    )


def _record(row: Row) -> MemoryRecord:
    kind: Kind = "preference" if row[3] == "preference" else "fact"
    return MemoryRecord(
        id=row[0],
        tenant=row[1],
        user=row[2],
        kind=kind,
        slot=row[4],
        text=row[5],
        value=row[6],
        negated=bool(row[7]),
        source=row[8],
        created_at=float(row[9]),
        updated_at=float(row[10]),
        superseded_by=row[11],
        superseded_at=None if row[12] is None else float(row[12]),
    )


def _escape_like(word: str) -> str:
    return word.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
