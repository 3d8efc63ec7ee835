"""The response cache: an exact and a semantic tier in front of generation (see ``cache/entry.py``
for what is stored and the backend protocol, ``cache/stage.py`` for where it runs)."""
