"""Long-term memory per (tenant, user): facts and preferences taken from conversations.

``Memory`` extracts (``RuleExtractor`` offline, ``LLMExtractor`` over any ChatModel with JSON
mode), deduplicates and writes; ``MemoryWriter`` does that in the background so an answer never
waits for it; ``Memory.recall`` finds what a run needs. Memories live in the control-plane
database (``DatabaseMemoryStore``: SQLite, or PostgreSQL + pgvector), scoped to their owner.
``SessionHistory`` keeps each session's turns and summarises the oldest when they outgrow the
context budget.
"""

from stanchion.memory.extract import Extractor
from stanchion.memory.history import ExtractiveSummariser, ModelSummariser, SessionHistory, Summariser
from stanchion.memory.llm import LLMExtractor
from stanchion.memory.records import Candidate, Kind, MemoryRecord, slot_name
from stanchion.memory.rules import RuleExtractor
from stanchion.memory.service import Change, Memory
from stanchion.memory.store import DatabaseMemoryStore, MemoryStore
from stanchion.memory.writer import MemoryWriter, WriterStats

__all__ = [
    "Candidate",
    "Change",
    "DatabaseMemoryStore",
    "ExtractiveSummariser",
    "Extractor",
    "Kind",
    "LLMExtractor",
    "Memory",
    "MemoryRecord",
    "MemoryStore",
    "MemoryWriter",
    "ModelSummariser",
    "RuleExtractor",
    "SessionHistory",
    "Summariser",
    "WriterStats",
    "slot_name",
]
