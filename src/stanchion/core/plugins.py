"""Extension points a user reaches by entry point, as simonw/llm's plugins: a package, not an edit.

A package adds a tool the same way (group ``stanchion.tools``, see ``tools/registry.py``), and
a chat model provider by declaring, in its own ``pyproject.toml``::

    [project.entry-points."stanchion.providers"]
    myprovider = "my_package.stanchion_provider:build"

where ``build(name, spec, *, embedder)`` returns a ChatModel (``stanchion.models.providers``
holds the built-in ones, registered the same way in Stanchion's own ``pyproject.toml``). A spec
then names it: ``models: {mine: {provider: myprovider, model: ...}}``. Names are read from the
installed packages' metadata (once per ``sys.path``), and nothing is imported until a spec asks
for it.
"""

from __future__ import annotations

import functools
import sys
from importlib.metadata import EntryPoint, entry_points

__all__ = ["PROVIDERS", "TOOLS", "PluginNotFound", "load", "names", "registered_text"]

PROVIDERS = "stanchion.providers"
TOOLS = "stanchion.tools"  # see tools/registry.py


class PluginNotFound(LookupError):
    """No installed package registers ``name`` in ``group``; ``registered`` lists the names that are."""

    def __init__(self, group: str, name: str, registered: list[str]) -> None:
        super().__init__(
            f"nothing named {name!r} in entry point group {group} ({registered_text(registered)})"
        )
        self.group = group
        self.name = name
        self.registered = registered


def registered_text(registered: list[str]) -> str:
    """The registered names as a phrase, or what to do when none is (metadata missing)."""
    if not registered:
        return "none is registered: is stanchion installed? pip install -e ."
    return f"registered: {', '.join(registered)}"


def _entry_points(group: str) -> dict[str, EntryPoint]:
    return _scan(group, tuple(sys.path))


@functools.lru_cache(maxsize=16)
def _scan(group: str, path: tuple[str, ...]) -> dict[str, EntryPoint]:
    """Reading every installed package's metadata takes ~7 ms: once per group and ``sys.path``
    (a folder added to the path, as a test does, is a new scan; a package installed into a folder
    already scanned is seen by the next process)."""
    return {ep.name: ep for ep in entry_points(group=group)}


def names(group: str) -> list[str]:
    """The names registered in ``group``, sorted."""
    return sorted(_entry_points(group))


def load(group: str, name: str) -> object:
    """The object ``name`` is registered for in ``group``; PluginNotFound when none is."""
    found = _entry_points(group).get(name)
    if found is None:
        raise PluginNotFound(group, name, names(group))
    return found.load()
