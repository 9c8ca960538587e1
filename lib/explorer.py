"""Explorers: figures that respond to controls, in a notebook and in the static HTML
book.

``frame_explorer`` draws a figure for every combination of a few control values once
(when the notebook runs) and returns HTML with one range slider per control that
switches between the precomputed frames in the page itself, without a Python kernel.
``live_explorer`` is the
``ipywidgets.interact`` version for notebook runners, on the same figure function.
"""
from __future__ import annotations

import base64
import html
import inspect
import io
import itertools
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .validation import check_positive_int

__all__ = ["frame_explorer", "live_explorer", "FrameExplorer"]

_SCRIPT = """<script>(function () {
  var root = document.getElementById("%s");
  var inputs = root.querySelectorAll("input[type=range]");
  var labels = JSON.parse(root.dataset.labels);
  function update() {
    var k = 0;
    inputs.forEach(function (input, a) {
      k = k * labels[a].length + Number(input.value);
      input.nextElementSibling.textContent = labels[a][Number(input.value)];
    });
    root.querySelectorAll("img").forEach(function (img, i) { img.hidden = i !== k; });
  }
  inputs.forEach(function (input) { input.addEventListener("input", update); });
  update();
})();</script>"""


def _options(values: Sequence) -> list[tuple[str, Any]]:
    """(label, value) pairs: items are values or (label, value) pairs, as in
    ipywidgets."""
    out = []
    for item in values:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            out.append(item)
        else:
            out.append(
                (format(item, "g") if isinstance(item, float) else str(item), item))
    return out


class FrameExplorer:
    """Precomputed frames of a figure and the sliders that pick one; shown as HTML."""

    def __init__(self, controls: list[tuple[str, list[str], int]], frames: list[bytes],
                 alts: list[str]):
        self.controls, self.frames, self.alts = controls, frames, alts

    def __repr__(self) -> str:
        names = ", ".join(name for name, _, _ in self.controls)
        return f"FrameExplorer({len(self.frames)} frames; controls: {names})"

    def _repr_html_(self) -> str:
        ident = f"gdt-explorer-{uuid.uuid4().hex[:12]}"
        labels = html.escape(json.dumps([labels for _, labels, _ in self.controls]))
        rows = [f'<div class="gdt-explorer" id="{ident}" data-labels="{labels}">']
        for name, labels_, start in self.controls:
            rows.append(
                f'<label style="display:block">{html.escape(name)} '
                f'<input type="range" min="0" max="{len(labels_) - 1}" step="1" '
                f'value="{start}" aria-label="{html.escape(name)}"> '
                f"<output>{html.escape(labels_[start])}</output></label>")
        for png, alt in zip(self.frames, self.alts):
            data = base64.b64encode(png).decode("ascii")
            rows.append(
                f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" '
                'style="max-width:100%" hidden>')
        rows.append("</div>")
        return "\n".join(rows) + _SCRIPT % ident


def frame_explorer(
    figure: Callable[..., Figure],
    controls: Mapping[str, tuple[str, Sequence]],
    alt: str,
    dpi: int = 80,
) -> FrameExplorer:
    """Draw ``figure(**kwargs)`` for every combination of control values.

    controls: slider name -> (keyword argument of ``figure``, values); a value may be a
    ``(label, value)`` pair. The slider starts at ``figure``'s default when it is a
    value.
    alt: one sentence describing the figure; each frame's alt text adds its settings.
    Returns an object that notebooks and the HTML book show as sliders over the frames.
    """
    if not callable(figure):
        raise TypeError(f"figure must be callable, got {type(figure).__name__}")
    if not isinstance(alt, str) or not alt.strip():
        raise ValueError("alt must be a non-empty sentence describing the figure")
    check_positive_int(dpi, "dpi")
    if not controls:
        raise ValueError("controls must name at least one (keyword, values) pair")
    defaults = {k: p.default for k, p in inspect.signature(figure).parameters.items()}
    specs = []
    for name, spec in controls.items():
        if not (isinstance(spec, tuple) and len(spec) == 2
                and isinstance(spec[0], str)):
            raise ValueError(
                f"controls[{name!r}] must be (keyword, values), got {spec!r}")
        options = _options(spec[1])
        if not options:
            raise ValueError(f"controls[{name!r}] has no values")
        values = [v for _, v in options]
        start = values.index(defaults[spec[0]]) if defaults.get(
            spec[0]) in values else 0
        specs.append((name, spec[0], options, start))

    frames, alts = [], []
    for combo in itertools.product(*(options for _, _, options, _ in specs)):
        kwargs = {key: value for (_, key, _, _), (_, value) in zip(specs, combo)}
        fig = figure(**kwargs)
        if not isinstance(fig, Figure):
            raise TypeError(f"figure(**{kwargs}) must return a matplotlib Figure, "
                            f"got {type(fig).__name__}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        plt.close(fig)
        frames.append(buffer.getvalue())
        settings = ", ".join(f"{name} {label}" for (name, _, _, _), (label, _)
                             in zip(specs, combo))
        alts.append(f"{alt.rstrip('.')} ({settings}).")
    controls_out = [(name, [label for label, _ in options], start)
                    for name, _, options, start in specs]
    return FrameExplorer(controls_out, frames, alts)


def live_explorer(figure: Callable[..., Figure], **widgets: Any) -> None:
    """``ipywidgets.interact`` on ``figure`` (which returns a Figure): needs a live
    kernel."""
    import ipywidgets
    from IPython.display import display

    def show(**kwargs):
        fig = figure(**kwargs)
        display(fig)
        plt.close(fig)

    ipywidgets.interact(show, **widgets)
