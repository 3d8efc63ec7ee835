"""Stanchion: spec-driven LLM application server over private data."""
