"""Shared vocabulary below ``index``, ``retrieve``, ``ingest`` and ``models``.

What more than one of them speaks, so none has to import another: the search filter language
(``filters``), text analysis for keyword search (``analyze``), sentence splitting (``sentences``),
the text a chunk is indexed and embedded as (``text``), and the embedders (``embed``: the
``Embedder`` protocol, the packaged MiniLM in ``numpy_bert`` and ``packaged``, and an
OpenAI-compatible endpoint in ``openai_embed``). Nothing here imports a higher layer.
"""
