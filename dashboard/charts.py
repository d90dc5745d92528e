"""Altair charts and HTML of the dashboard, built from plain data.

Pure functions from what :mod:`harstream.dashboard.state` returns to
charts/HTML; the Streamlit script only places them on the page. One colour
per activity everywhere (cards, timeline, probability bars).
"""

from __future__ import annotations

import html
from typing import Sequence

import numpy as np

from harstream.stream.activities import ACTIVITIES, UNKNOWN

from .state import PREDICTED, TRANSITION, UNLABELLED, OverviewRow

# Tableau 10: distinct, colour-blind friendly enough, readable on white.
COLOURS = {
    "WALKING": "#4e79a7",
    "WALKING_UPSTAIRS": "#f28e2b",
    "WALKING_DOWNSTAIRS": "#e15759",
    "SITTING": "#76b7b2",
    "STANDING": "#59a14f",
    "LAYING": "#edc948",
    TRANSITION: "#b07aa1",
    UNKNOWN: "#9d9590",  # the model abstained
    UNLABELLED: "#dcd8d5",  # the recording has no label here
}
# Material Symbols ligatures (the icon font Streamlit itself ships).
ICONS = {
    "WALKING": "directions_walk",
    "WALKING_UPSTAIRS": "trending_up",
    "WALKING_DOWNSTAIRS": "trending_down",
    "SITTING": "chair",
    "STANDING": "accessibility_new",
    "LAYING": "hotel",
    TRANSITION: "sync_alt",
    UNKNOWN: "help",
    UNLABELLED: "help",
}
LEGEND = tuple(COLOURS)


def pretty(activity: str | None) -> str:
    """Human name of an activity.

    >>> pretty("WALKING_UPSTAIRS"), pretty(None)
    ('Walking upstairs', '–')
    """
    if not activity:
        return "–"
    return activity.replace("_", " ").capitalize()


def colour_of(activity: str | None) -> str:
    return COLOURS.get(activity or UNKNOWN, COLOURS[UNKNOWN])


# ------------------------------------------------------------------ overview

CARD_CSS = """
<style>
.hs-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:8px;font-family:inherit}
.hs-card{border-radius:8px;padding:6px 10px;border-left:8px solid var(--c);background:color-mix(in srgb,var(--c) 14%,white);line-height:1.3}
.hs-card.stale{opacity:.5}
.hs-dev{font-size:.78rem;color:#555;display:flex;justify-content:space-between}
.hs-act{font-weight:600;font-size:1.0rem;display:flex;align-items:center;gap:4px;white-space:nowrap;overflow:hidden}
.hs-ico{font-family:'Material Symbols Rounded';font-size:1.3rem;font-weight:normal;color:var(--c);filter:brightness(.8)}
.hs-bar{height:4px;background:#ddd;border-radius:2px;margin:2px 0}
.hs-bar>div{height:4px;background:var(--c);border-radius:2px;filter:brightness(.85)}
.hs-sub{font-size:.75rem;color:#444}
.hs-ok{color:#1b7f3b;font-weight:600}.hs-bad{color:#c0392b;font-weight:600}
</style>
"""


def overview_html(rows: Sequence[OverviewRow], stale_after: float = 5.0) -> str:
    """One HTML grid of device cards (one element for any number of devices).

    Each card carries ``data-device`` and ``data-activity`` so the browser
    test (and any scraper) can read the page without parsing text.
    """
    cards = []
    for r in rows:
        c = colour_of(r.activity)
        if r.match is True:
            verdict = f'<span class="hs-ok">✓</span> truth {html.escape(pretty(r.truth))}'
        elif r.match is False:
            verdict = f'<span class="hs-bad">✗</span> truth {html.escape(pretty(r.truth))}'
        elif r.truth is not None:
            verdict = f"truth {html.escape(pretty(r.truth))}"
        else:
            verdict = "no ground truth"
        acc = f" · acc {r.accuracy:.0%}" if r.accuracy is not None else ""
        cards.append(
            f'<div class="hs-card{" stale" if r.age_s > stale_after else ""}" style="--c:{c}" '
            f'data-device="{html.escape(r.device)}" data-activity="{html.escape(r.activity)}">'
            f'<div class="hs-dev"><span>{html.escape(r.device)}</span><span>{r.age_s:.1f} s ago</span></div>'
            f'<div class="hs-act"><span class="hs-ico">{ICONS.get(r.activity, ICONS[UNKNOWN])}</span>'
            f"{html.escape(pretty(r.activity))}</div>"
            f'<div class="hs-bar"><div style="width:{100 * r.confidence:.0f}%"></div></div>'
            f'<div class="hs-sub">{r.confidence:.0%} confident · {verdict}{acc}</div></div>'
        )
    return CARD_CSS + '<div class="hs-grid" data-testid="hs-overview">' + "".join(cards) + "</div>"


# ------------------------------------------------------------------- device
#
# Charts are Vega-Lite specs written as plain dicts with the data inline:
# building them through altair costs 50-150 ms per chart (schema
# validation), a dict costs microseconds, and the page redraws every second.

Spec = dict


def _colour(field: str, legend: dict | None = None) -> dict:
    return {
        "field": field,
        "type": "nominal",
        "scale": {"domain": list(COLOURS), "range": list(COLOURS.values())},
        "legend": legend,
    }


def probability_chart(probs: Sequence[float], raw: Sequence[float] | None = None) -> Spec:
    """Horizontal bars of the smoothed class probabilities; ticks mark the
    raw (unsmoothed) probabilities of the latest window."""
    n = min(len(probs), len(ACTIVITIES))
    marks = raw if raw is not None and len(raw) >= n else probs
    values = [
        {"activity": ACTIVITIES[i], "smoothed": float(probs[i]), "raw": float(marks[i])} for i in range(n)
    ]
    y = {"field": "activity", "type": "nominal", "sort": list(ACTIVITIES), "title": None, "axis": {"labelLimit": 200}}
    return {
        "data": {"values": values},
        "height": {"step": 24},
        "layer": [
            {
                "mark": "bar",
                "encoding": {
                    "x": {"field": "smoothed", "type": "quantitative", "scale": {"domain": [0, 1]},
                          "axis": {"format": "%"}, "title": "probability (smoothed; tick: this window)"},
                    "y": y,
                    "color": _colour("activity"),
                    "tooltip": [{"field": "activity"}, {"field": "smoothed", "format": ".1%"},
                                {"field": "raw", "format": ".1%"}],
                },
            },
            {
                "mark": {"type": "tick", "color": "black", "thickness": 2, "size": 18},
                "encoding": {"x": {"field": "raw", "type": "quantitative"}, "y": y},
            },
        ],
    }


def timeline_chart(bands: Sequence[dict], seconds: float) -> Spec:
    """Coloured bands of the predicted activity, the ground truth underneath."""
    values = []
    for b in bands:
        values.append({"lane": "model", "start": b["start"], "end": b["end"], "activity": b["predicted"]})
        if b["truth"] is not None:
            values.append({"lane": "truth", "start": b["start"], "end": b["end"], "activity": b["truth"]})
    return {
        "data": {"values": values},
        "height": {"step": 34},
        "mark": "rect",
        "encoding": {
            "x": {"field": "start", "type": "quantitative", "scale": {"domain": [-seconds, 0]},
                  "title": "seconds (0 = latest window)"},
            "x2": {"field": "end"},
            "y": {"field": "lane", "type": "nominal", "sort": ["model", "truth"], "title": None},
            "color": _colour("activity", {"orient": "bottom", "columns": 4, "title": None}),
            "tooltip": [{"field": "lane"}, {"field": "activity"}, {"field": "start", "format": ".1f"}],
        },
    }


def signal_chart(t: np.ndarray, values: np.ndarray, title: str, unit: str) -> Spec:
    """x, y, z of one sensor over the last seconds."""
    t = np.round(np.asarray(t, dtype=float), 3).tolist()
    v = np.round(np.asarray(values, dtype=float), 4).tolist()
    rows = [{"t": ti, "axis": axis, "value": vi[k]} for ti, vi in zip(t, v) for k, axis in enumerate("xyz")]
    return {
        "title": title,
        "data": {"values": rows},
        "height": 240,
        "mark": {"type": "line", "strokeWidth": 1.5},
        "encoding": {
            "x": {"field": "t", "type": "quantitative", "title": "seconds"},
            "y": {"field": "value", "type": "quantitative", "title": unit},
            "color": {"field": "axis", "type": "nominal", "legend": {"orient": "right", "title": None}},
        },
    }


def confusion_chart(matrix: np.ndarray) -> Spec:
    """Heatmap of a session confusion matrix (rows truth, columns predicted);
    the "unknown" column only when the model abstained at all."""
    columns = list(PREDICTED) if matrix[:, -1].any() else list(ACTIVITIES)
    values = []
    for i, truth in enumerate(ACTIVITIES):
        total = int(matrix[i].sum())
        for j, predicted in enumerate(columns):
            count = int(matrix[i, j])
            values.append({"truth": truth, "predicted": predicted, "count": count,
                           "share": count / total if total else 0.0})
    encoding = {
        "x": {"field": "predicted", "type": "nominal", "sort": columns, "title": "predicted",
              "axis": {"labelAngle": -35, "labelOverlap": False, "labelLimit": 200}},
        "y": {"field": "truth", "type": "nominal", "sort": list(ACTIVITIES), "title": "truth",
              "axis": {"labelLimit": 200}},
    }
    return {
        "data": {"values": values},
        "height": {"step": 30},
        "encoding": encoding,
        "layer": [
            {
                "mark": "rect",
                "encoding": {
                    "color": {"field": "share", "type": "quantitative",
                              "scale": {"scheme": "blues", "domain": [0, 1]}, "legend": None},
                    "tooltip": [{"field": "truth"}, {"field": "predicted"}, {"field": "count"},
                                {"field": "share", "format": ".1%"}],
                },
            },
            {
                "mark": {"type": "text", "fontSize": 11},
                "encoding": {
                    "text": {"field": "count", "type": "quantitative"},
                    "color": {"condition": {"test": "datum.share > 0.5", "value": "white"}, "value": "black"},
                },
            },
        ],
    }
