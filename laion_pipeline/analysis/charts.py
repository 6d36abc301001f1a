"""Charts of the analysis as PNG images, in one style: horizontal bars for rankings, columns for
distributions. Drawn with matplotlib's object API (no pyplot state, no display needed)."""

import io
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from matplotlib import font_manager, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import FuncFormatter

COLOR = "#3b6ea5"
MARK_COLOR = "#c0392b"
WIDTH_INCHES = 8.0
DPI = 100
LABEL_CHARS = 42
# An axis label wraps at this many characters (it is centred on the axes, not the figure).
AXIS_LABEL_CHARS = 60
# Fonts tried in turn for each character: names in the lists can be in any script. Those not
# installed are skipped; a character no font has is drawn as a box.
FONT_FAMILIES = ("DejaVu Sans", "Noto Sans CJK JP", "Noto Sans")


def _fonts() -> list[str]:
    installed = {font.name for font in font_manager.fontManager.ttflist}
    return [family for family in FONT_FAMILIES if family in installed] or ["sans-serif"]


STYLE = {
    # Labels are names and hosts from the data: plain text, never mathtext (`$\\foo$`).
    "text.parse_math": False,
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#dddddd",
    "axes.axisbelow": True,
}


def _short(label: str) -> str:
    label = " ".join(label.split()) or "(none)"
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def _style() -> Any:
    """The charts' style, for drawing and saving alike."""
    return rc_context({**STYLE, "font.family": _fonts()})


@contextmanager
def _missing_glyphs_quiet() -> Iterator[None]:
    # A glyph no installed font has is drawn as a box; the warning says no more than that.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        yield


def _axis_label(text: str) -> str:
    return "\n".join(textwrap.wrap(text, AXIS_LABEL_CHARS)) or text


def _thousands(value: float, _position: int) -> str:
    return f"{value:,.0f}"


def _drawn_texts(figure: Figure) -> list[Text]:
    """The texts ``figure`` draws: titles, axis labels, the tick labels within the axes' view
    and the texts on the axes (bar labels)."""
    texts = list(figure.texts)
    for axes in figure.axes:
        texts += [*axes.texts, axes.title, axes.xaxis.label, axes.yaxis.label]
        for axis in (axes.xaxis, axes.yaxis):
            low, high = sorted(axis.get_view_interval())
            texts += [t.label1 for t in axis.get_major_ticks() if low <= t.get_loc() <= high]
    return [t for t in texts if t.get_visible() and t.get_text()]


def texts_outside(figure: Figure) -> list[str]:
    """The texts of ``figure``, as drawn, that reach past its edges (cut off in the PNG)."""
    with _missing_glyphs_quiet():
        figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    edge = figure.bbox.padded(1)
    outside = []
    for text in _drawn_texts(figure):
        box = text.get_window_extent(renderer)
        if not (edge.x0 <= box.x0 <= box.x1 <= edge.x1 and edge.y0 <= box.y0 <= box.y1 <= edge.y1):
            outside.append(text.get_text())
    return outside


def _fitted(figure: Figure) -> Figure:
    """``figure`` made wide enough for every text it draws (a long name, a long label)."""
    for _ in range(3):
        if not texts_outside(figure):
            break
        tight = figure.get_tightbbox()
        figure.set_figwidth(max(figure.get_figwidth(), tight.width + 0.2))
    return figure


def png(figure: Figure) -> bytes:
    """``figure`` as a PNG image, first made wide enough for every text it draws."""
    with _style():
        figure = _fitted(figure)
        buffer = io.BytesIO()
        with _missing_glyphs_quiet():
            figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
        return buffer.getvalue()


def undrawable(labels: Sequence[str]) -> int | None:
    """The index of the first of ``labels`` that cannot be drawn alone (why a chart failed),
    or None."""
    for index, label in enumerate(labels):
        try:
            png(ranking_figure("", "", [label], [1]))
        except Exception:
            return index
    return None


def _figure(title: str, height: float) -> Figure:
    figure = Figure(figsize=(WIDTH_INCHES, height), layout="constrained")
    FigureCanvasAgg(figure)  # drawn to measure its texts (texts_outside), then saved
    figure.suptitle(title, x=0.01, ha="left", fontsize=12, fontweight="bold")
    return figure


def ranking_figure(
    title: str,
    xlabel: str,
    labels: Sequence[str],
    values: Sequence[int],
    notes: Sequence[str] | None = None,
) -> Figure:
    """Horizontal bars, the largest on top, each labelled with its value (or its note)."""
    with _style():
        figure = _figure(title, 1.4 + 0.28 * max(len(labels), 1))
        axes = figure.add_subplot()
        positions = range(len(labels))[::-1]
        bars = axes.barh(list(positions), values, color=COLOR, height=0.7)
        axes.set_yticks(list(positions), [_short(label) for label in labels])
        axes.grid(axis="y", visible=False)
        axes.xaxis.set_major_formatter(FuncFormatter(_thousands))
        axes.set_xlabel(_axis_label(xlabel))
        texts = notes if notes is not None else [f"{v:,}" for v in values]
        axes.bar_label(bars, labels=list(texts), padding=3, fontsize=8)
        axes.margins(x=0.15)
        if not labels:
            axes.text(0.5, 0.5, "nothing to show", transform=axes.transAxes, ha="center")
        return figure


def distribution_figure(
    title: str,
    panels: Sequence[tuple[str, Sequence[str], Sequence[int]]],
    mark: str | None = None,
) -> Figure:
    """One column chart per panel ``(axis label, bin labels, counts)``, side by side; ``mark``
    names a bin whose left edge gets a dashed line (such as the 0.5 threshold)."""
    with _style():
        figure = _figure(title, 3.6)
        for index, (xlabel, bins, counts) in enumerate(panels, 1):
            axes = figure.add_subplot(1, len(panels), index)
            axes.bar(range(len(bins)), counts, color=COLOR, width=0.85)
            step = max(1, len(bins) // 8)
            axes.set_xticks(range(0, len(bins), step), list(bins)[::step], rotation=45, ha="right")
            axes.grid(axis="x", visible=False)
            axes.yaxis.set_major_formatter(FuncFormatter(_thousands))
            axes.set_xlabel(_axis_label(xlabel))
            axes.set_ylabel("images")
            if mark is not None and mark in bins:
                axes.axvline(list(bins).index(mark) - 0.5, color=MARK_COLOR, linestyle="--")
        return figure
