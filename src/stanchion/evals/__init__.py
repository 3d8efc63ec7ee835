"""Evaluation: metrics and runners for retrieval quality and latency."""
