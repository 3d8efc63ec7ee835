"""Retrieval: keyword and vector search, fusion, filters and access control."""
