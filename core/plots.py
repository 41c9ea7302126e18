"""Figures without global state: a matplotlib `Figure` on its own Agg canvas, never pyplot, so plotting neither
switches the process's backend nor keeps figures alive in pyplot's registry.

    fig = figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ...
    fig.savefig(path, dpi=150)
"""

from __future__ import annotations


def figure(**kwargs):
    """A `matplotlib.figure.Figure` attached to an Agg canvas (PNG output, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig
