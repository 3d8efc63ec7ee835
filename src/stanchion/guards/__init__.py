"""Guards: PII detection, masking and restoring; prompt-injection detection (issue 13). Each part
is a small module of its own; the pipeline stages that run them are built in ``pipeline/``."""
