"""The public API is explicit: everything in __all__ exists, is sorted, and nothing public is missed."""

from __future__ import annotations

import stanchion


def test_all_is_sorted_and_importable() -> None:
    assert stanchion.__all__ == sorted(stanchion.__all__)
    for name in stanchion.__all__:
        assert getattr(stanchion, name) is not None


def test_no_unlisted_public_names() -> None:
    public = {n for n in vars(stanchion) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(stanchion, n)).__name__ == "module"}
    assert public - modules == set(stanchion.__all__)
