"""lib.explorer: precomputed frames switched by sliders in the page."""
from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from lib.explorer import frame_explorer  # noqa: E402

calls = []


def _figure(a=2, kind="up"):
    calls.append((a, kind))
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, a if kind == "up" else -a])
    return fig


def test_frames_cover_every_combination_in_slider_order():
    calls.clear()
    ex = frame_explorer(
        _figure, {
            "slope a": ("a", [1, 2, 3]),
            "direction": ("kind", [("rising", "up"), ("falling", "down")])
        }, alt="A line whose slope the sliders set.")
    assert calls == [(a, k) for a in (1, 2, 3) for k in ("up", "down")]
    assert len(ex.frames) == 6 and len(set(ex.frames)) == 6  # every frame differs
    assert ex.controls == [("slope a", ["1", "2", "3"], 1),
                           ("direction", ["rising", "falling"], 0)]
    assert ex.alts[
        3] == "A line whose slope the sliders set (slope a 2, direction falling)."
    page = ex._repr_html_()
    assert page.count("<img ") == 6 and page.count('type="range"') == 2
    assert re.findall(r'alt="([^"]*)"', page)[0].startswith("A line whose slope")
    assert "<script>" in page and "<function" not in page
    assert repr(ex) == "FrameExplorer(6 frames; controls: slope a, direction)"


def test_bad_arguments_name_what_was_expected():
    with pytest.raises(ValueError, match="alt"):
        frame_explorer(_figure, {"a": ("a", [1])}, alt=" ")
    with pytest.raises(ValueError, match="keyword, values"):
        frame_explorer(_figure, {"a": [1, 2]}, alt="x")
    with pytest.raises(ValueError, match="no values"):
        frame_explorer(_figure, {"a": ("a", [])}, alt="x")
    with pytest.raises(TypeError, match="Figure"):
        frame_explorer(lambda a=1: None, {"a": ("a", [1])}, alt="x")
