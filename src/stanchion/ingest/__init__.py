"""Ingestion: load sources into Documents, clean them, chunk them, and index them incrementally."""
