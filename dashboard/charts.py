"""Altair charts and HTML of the dashboard, built from plain data.

Pure functions from what :mod:`harstream.dashboard.state` returns to
charts/HTML; the Streamlit script only places them on the page. One colour
per activity everywhere (cards, timeline, probability bars).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Sequence

import numpy as np

from harstream.stream.core.activities import ACTIVITIES, SET_DOWN, STILL, TRANSITIONS, UNKNOWN

from .state import MODE_HINTS, PREDICTED, TRANSITION, UNLABELLED, WORN_TEXT, OverviewRow, display_category

# Tableau 10: distinct, colour-blind friendly enough, readable on white.
COLOURS = {
    "WALKING": "#4e79a7",
    "WALKING_UPSTAIRS": "#f28e2b",
    "WALKING_DOWNSTAIRS": "#e15759",
    "SITTING": "#76b7b2",
    "STANDING": "#59a14f",
    "LAYING": "#edc948",
    STILL: "#9c755f",  # a posture the device cannot name (placement-free mode)
    # A postural transition is a state of its own, not a mistake: neutral
    # grey, hatched wherever it is drawn (cards, timeline lanes).
    TRANSITION: "#b9b2ab",
    UNKNOWN: "#6f6865",  # nothing decided yet, or the model abstained
    SET_DOWN: "#d4a6c8",  # the final history's device set down, not worn (kept apart from lying)
    UNLABELLED: "#e4e1de",  # the recording has no label here
}
# Stripes for transitions: CSS for the cards, a Vega gradient for the charts
# (Vega-Lite has no pattern fill; a many-stop diagonal gradient draws stripes).
HATCH_CSS = "repeating-linear-gradient(135deg,#d9d4cf 0 5px,#f4f2f0 5px 10px)"
_STRIPES = 10
HATCH_FILL = {
    "gradient": "linear",
    "x1": 0,
    "y1": 0,
    "x2": 1,
    "y2": 1,
    "stops": [
        {"offset": round(k / (2 * _STRIPES) + e, 4), "color": c}
        for k in range(2 * _STRIPES)
        for e, c in ((0.0, ("#b9b2ab", "#ece8e4")[k % 2]), (1 / (2 * _STRIPES) - 1e-4, ("#b9b2ab", "#ece8e4")[k % 2]))
    ],
}
# Stripes over a segment's own colour: the final history's provisional end.
PROVISIONAL_FILL = {
    **HATCH_FILL,
    "stops": [
        {"offset": round(k / (2 * _STRIPES) + e, 4), "color": ("rgba(255,255,255,0.7)", "rgba(255,255,255,0)")[k % 2]}
        for k in range(2 * _STRIPES)
        for e in (0.0, 1 / (2 * _STRIPES) - 1e-4)
    ],
}
# Material Symbols ligatures (the icon font Streamlit itself ships).
ICONS = {
    "WALKING": "directions_walk",
    "WALKING_UPSTAIRS": "trending_up",
    "WALKING_DOWNSTAIRS": "trending_down",
    "SITTING": "chair",
    "STANDING": "accessibility_new",
    "LAYING": "hotel",
    STILL: "airline_seat_recline_normal",
    TRANSITION: "sync_alt",
    UNKNOWN: "help",
    SET_DOWN: "table_restaurant",
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


#: Characters CommonMark lets a backslash escape: all ASCII punctuation.
_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
#: What GitHub-flavoured markdown turns into a link even when escaped (Streamlit
#: finds them in the text): ``scheme:``, ``www.``, the ``@`` of an address; a
#: word joiner (invisible) after each keeps them text.
_AUTOLINKED = re.compile(r"(:|www\.|@)", re.IGNORECASE)


def md(text: object) -> str:
    """``text`` (from the bus: any publisher's) as markdown that shows it as
    it is: every ASCII punctuation character escaped, so an image, a link,
    emphasis, LaTeX (``$``) or a code span in it is text, never rendered (an
    image would have every viewer's browser fetch an address of the
    publisher's choosing); an address in it gets an invisible word joiner
    after its ``:`` (``www.``, ``@``), so it is not made a link either.

    >>> print(md("![x](p.png) *a* $1$"))
    \\!\\[x\\]\\(p\\.png\\) \\*a\\* \\$1\\$
    """
    text = _AUTOLINKED.sub("\\1\u2060", str(text))
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


def md_code(text: object) -> str:
    """``text`` as a markdown code span whatever backticks it holds (a fence
    longer than its longest run of them), so nothing in it is rendered.

    >>> md_code("m1"), md_code("x` ![i](u) `x")
    ('`m1`', '`` x` ![i](u) `x ``')
    """
    text = str(text)
    if "`" not in text:
        return f"`{text}`"
    fence = "`" * (max(len(run) for run in re.findall("`+", text)) + 1)
    return f"{fence} {text} {fence}"


def colour_of(activity: str | None) -> str:
    """Colour of a display label or truth category (transitions share one)."""
    return COLOURS.get(activity or UNKNOWN) or COLOURS[display_category(activity)]


def duration_text(seconds: float) -> str:
    """How long, for a person: ``45 s``, ``3 min 05 s``, ``2 h 07 min``.

    >>> duration_text(4.2), duration_text(185), duration_text(7630)
    ('4 s', '3 min 05 s', '2 h 07 min')
    """
    s = int(max(seconds, 0.0))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


# ------------------------------------------------------------------ overview

CARD_CSS = (
    """
<style>
.hs-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:8px;font-family:inherit}
.hs-card{border-radius:8px;padding:6px 10px;border-left:8px solid var(--c);background:color-mix(in srgb,var(--c) 14%,white);line-height:1.3}
.hs-card.stale{opacity:.5}
.hs-card.transition{background:"""
    + HATCH_CSS
    + """}
.hs-for{font-weight:600}
.hs-dev{font-size:.78rem;color:#555;display:flex;justify-content:space-between}
.hs-act{font-weight:600;font-size:1.0rem;display:flex;align-items:center;gap:4px;white-space:nowrap;overflow:hidden}
.hs-ico{font-family:'Material Symbols Rounded';font-size:1.3rem;font-weight:normal;color:var(--c);filter:brightness(.8)}
.hs-bar{height:4px;background:#ddd;border-radius:2px;margin:2px 0}
.hs-bar>div{height:4px;background:var(--c);border-radius:2px;filter:brightness(.85)}
.hs-sub{font-size:.75rem;color:#444}
.hs-today{font-size:.72rem;color:#555;margin-top:2px}
.hs-ok{color:#1b7f3b;font-weight:600}.hs-bad{color:#c0392b;font-weight:600}
.hs-badges{display:inline-flex;gap:4px;margin-left:4px}
.hs-badge{font-size:.68rem;padding:0 5px;border-radius:6px;border:1px solid #999;color:#333;background:#fff}
.hs-badge.any{border-color:#9c755f;color:#6b4f3f}.hs-badge.worn{border-style:dashed}.hs-badge.personal{border-color:#1b7f3b;color:#1b7f3b}
</style>
"""
)


def overview_html(rows: Sequence[OverviewRow], stale_after: float = 5.0) -> str:
    """One HTML grid of device cards (one element for any number of devices).

    Each card carries ``data-device``, ``data-activity`` (the label the
    display shows) and ``data-lasted`` (its seconds so far) so the browser
    test (and any scraper) can read the page without parsing text. A
    postural transition on display gets a hatched neutral card, never the
    error mark. Per-device badges go in the ``hs-badges`` slot after the
    device name: the mode the worker serves it in (``data-mode`` too), with
    what that mode can tell as its tooltip.
    """
    cards = []
    for r in rows:
        c = colour_of(r.activity)
        transition = r.activity in TRANSITIONS
        if r.match is True:
            verdict = f'<span class="hs-ok">✓</span> truth {html.escape(pretty(r.truth))}'
        elif r.match is False:
            verdict = f'<span class="hs-bad">✗</span> truth {html.escape(pretty(r.truth))}'
        elif r.truth is not None:
            verdict = f"truth {html.escape(pretty(r.truth))}"
        else:
            verdict = "no ground truth"
        acc = f" · acc {r.accuracy:.0%}" if r.accuracy is not None else ""
        confidence = "changing posture" if transition else f"{r.confidence:.0%} confident"
        classes = "hs-card" + (" stale" if r.age_s > stale_after else "") + (" transition" if transition else "")
        icon = ICONS.get(r.activity) or ICONS[display_category(r.activity)]
        badges = mode_badge(r.mode) + worn_badge(r.placement)
        cards.append(
            f'<div class="{classes}" style="--c:{c}" data-device="{html.escape(r.device)}" '
            f'data-activity="{html.escape(r.activity)}" data-lasted="{r.lasted_s:.1f}" data-mode="{html.escape(r.mode)}">'
            f'<div class="hs-dev"><span>{html.escape(r.device)}<span class="hs-badges">{badges}</span></span>'
            f"<span>{r.age_s:.1f} s ago</span></div>"
            f'<div class="hs-act"><span class="hs-ico">{icon}</span>{html.escape(pretty(r.activity))}</div>'
            f'<div class="hs-bar"><div style="width:{100 * r.confidence:.0f}%"></div></div>'
            f'<div class="hs-sub"><b class="hs-for" title="how long the display has shown this">'
            f"for {duration_text(r.lasted_s)}</b> · {confidence} · {verdict}{acc}</div>"
            f'<div class="hs-today" data-today="{html.escape(json.dumps((r.today or {}).get("minutes", {})))}">'
            f"{html.escape(today_text(r.today))}</div></div>"
        )
    return CARD_CSS + '<div class="hs-grid" data-testid="hs-overview">' + "".join(cards) + "</div>"


def mode_badge(mode: str) -> str:
    """The badge of a device's mode (empty for a worker that predates modes).

    >>> mode_badge("personal").split(" title=")[0] + ">"
    '<span class="hs-badge personal">'
    """
    if not mode:
        return ""
    hint = MODE_HINTS.get(mode, "")
    return f'<span class="hs-badge {html.escape(mode)}" title="{html.escape(hint)}">{html.escape(mode)}</span>'


def worn_badge(placement: str | None) -> str:
    """The badge of where a device seems worn (empty while the worker is unsure).

    >>> worn_badge("thigh")
    '<span class="hs-badge worn" title="where its gait says it is worn (estimated)">worn: thigh (pocket)</span>'
    """
    if not placement:
        return ""
    text = WORN_TEXT.get(placement, placement)
    return f'<span class="hs-badge worn" title="where its gait says it is worn (estimated)">worn: {html.escape(text)}</span>'


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


def probability_chart(
    probs: Sequence[float], raw: Sequence[float] | None = None, classes: Sequence[str] = ACTIVITIES
) -> Spec:
    """Horizontal bars of the smoothed probabilities of ``classes`` (the
    model's, in its order: only what the device's mode can know); ticks mark
    the raw (unsmoothed) probabilities of the latest window."""
    n = min(len(probs), len(classes))
    marks = raw if raw is not None and len(raw) >= n else probs
    values = [{"activity": classes[i], "smoothed": float(probs[i]), "raw": float(marks[i])} for i in range(n)]
    y = {"field": "activity", "type": "nominal", "sort": list(classes[:n]), "title": None, "axis": {"labelLimit": 200}}
    return {
        "data": {"values": values},
        "height": {"step": 24},
        "layer": [
            {
                "mark": "bar",
                "encoding": {
                    "x": {
                        "field": "smoothed",
                        "type": "quantitative",
                        "scale": {"domain": [0, 1]},
                        "axis": {"format": "%"},
                        "title": "probability (smoothed; tick: this window)",
                    },
                    "y": y,
                    "color": _colour("activity"),
                    "tooltip": [
                        {"field": "activity"},
                        {"field": "smoothed", "format": ".1%"},
                        {"field": "raw", "format": ".1%"},
                    ],
                },
            },
            {
                "mark": {"type": "tick", "color": "black", "thickness": 2, "size": 18},
                "encoding": {"x": {"field": "raw", "type": "quantitative"}, "y": y},
            },
        ],
    }


#: The timeline's lanes, top down: the worker's final history (its provisional
#: end hatched), the now label the card shows, the per-window raw label, the truth.
LANES = ("history", "display", "raw", "truth")
LANE_TITLES = {"history": "final history", "display": "now label", "raw": "raw window", "truth": "truth"}


def timeline_chart(segments: dict[str, Sequence[dict]], seconds: float) -> Spec:
    """The lanes of :meth:`DeviceState.segments` as coloured segments: the
    final history (what happened, settled a few seconds late; its provisional
    end hatched), what the display showed (one segment per decoder decision),
    the per-window raw label, and the ground truth. Postural transitions are
    hatched grey."""
    values = []
    for lane in LANES:
        for seg in segments.get(lane, ()):
            values.append(
                {
                    "lane": LANE_TITLES[lane],
                    "provisional": bool(seg.get("provisional", False)),
                    "start": seg["start"],
                    "end": seg["end"],
                    "activity": display_category(seg["label"]) if seg["label"] not in COLOURS else seg["label"],
                    "label": pretty(seg["label"]),
                    "seconds": round(seg["end"] - seg["start"], 1),
                }
            )
    encoding = {
        "x": {
            "field": "start",
            "type": "quantitative",
            "scale": {"domain": [-seconds, 0]},
            "title": "seconds (0 = latest window)",
        },
        "x2": {"field": "end"},
        "y": {"field": "lane", "type": "nominal", "sort": [LANE_TITLES[k] for k in LANES], "title": None},
        "tooltip": [
            {"field": "lane"},
            {"field": "label"},
            {"field": "seconds"},
            {"field": "start", "format": ".1f"},
            {"field": "provisional"},
        ],
    }
    return {
        "data": {"values": values},
        "height": {"step": 30},
        "encoding": encoding,
        "layer": [
            {
                "mark": {"type": "rect", "stroke": "white", "strokeWidth": 0.5},
                "encoding": {"color": _colour("activity", {"orient": "bottom", "columns": 5, "title": None})},
            },
            {
                "transform": [{"filter": {"field": "activity", "equal": TRANSITION}}],
                "mark": {"type": "rect", "fill": HATCH_FILL, "stroke": "#8c847e", "strokeWidth": 0.5},
            },
            {  # not final yet: hatched over its colour
                "transform": [{"filter": "datum.provisional"}],
                "mark": {"type": "rect", "fill": PROVISIONAL_FILL, "stroke": "#555", "strokeDash": [3, 2]},
            },
        ],
    }


def today_text(today: dict | None, name: Callable[[str], str] = str) -> str:
    """The day's minutes from the final history, for a card or a caption
    (``name`` shows each category's name from the bus: :func:`md` in markdown).

    >>> today_text({"day": "2026-12-07", "minutes": {"walking": 12.4, "stairs": 0.0, "sitting": 61.0}})
    'today: walking 12 min · sitting 1 h 1 min'
    >>> today_text({"day": "2026-12-07", "minutes": {"walking": 0.25, "lying": 0.0}})
    'today: walking 15 s'
    >>> today_text({"day": "2026-12-07", "minutes": {"lying": 0.0, "set_down": 95.0}})
    'today: set down 1 h 35 min'
    >>> today_text(None)
    ''
    """
    if not today or not isinstance(today.get("minutes"), dict):
        return ""
    parts = []
    for key, minutes in today["minutes"].items():
        category = key.replace("_", " ")  # set_down: set down
        whole = int(round(minutes))
        if whole >= 60:
            parts.append(f"{name(category)} {whole // 60} h {whole % 60} min")
        elif whole >= 1:
            parts.append(f"{name(category)} {whole} min")
        elif minutes * 60 >= 1:  # a sped-up replay counts bus time: seconds, not minutes
            parts.append(f"{name(category)} {minutes * 60:.0f} s")
    return "today: " + (" · ".join(parts) if parts else "nothing final yet")


def today_chart(today: dict) -> Spec:
    """The day's minutes per activity (final history) as bars."""
    values = [{"activity": k.replace("_", " "), "minutes": round(float(v), 1)} for k, v in today["minutes"].items()]
    return {
        "title": {"text": f"today ({today['day']}, UTC): minutes from the final history", "fontSize": 12},
        "data": {"values": values},
        "height": {"step": 18},
        "mark": {"type": "bar", "color": "#4c78a8"},
        "encoding": {
            "y": {"field": "activity", "type": "nominal", "sort": None, "title": None},
            "x": {"field": "minutes", "type": "quantitative", "title": "minutes"},
            "tooltip": [{"field": "activity"}, {"field": "minutes"}],
        },
    }


def mix_chart(counts: dict[str, int]) -> Spec:
    """The activity mix now: one bar per activity shown, how many devices."""
    values = [{"activity": k, "label": pretty(k), "devices": int(n)} for k, n in counts.items()]
    y = {
        "field": "label",
        "type": "nominal",
        "sort": [pretty(k) for k in counts],
        "title": None,
        "axis": {"labelLimit": 160, "ticks": False, "domain": False},
    }
    return {
        "title": {"text": "activity mix now", "fontSize": 12, "anchor": "start"},
        "data": {"values": values},
        "height": {"step": 16},
        "encoding": {"y": y, "x": {"field": "devices", "type": "quantitative", "axis": None}},
        "layer": [
            {
                "mark": {"type": "bar", "cornerRadiusEnd": 2},
                "encoding": {"color": _colour("activity"), "tooltip": [{"field": "label"}, {"field": "devices"}]},
            },
            {
                "transform": [{"filter": {"field": "activity", "equal": TRANSITION}}],
                "mark": {"type": "bar", "fill": HATCH_FILL, "cornerRadiusEnd": 2},
            },
            {
                "mark": {"type": "text", "align": "left", "dx": 3, "fontSize": 11},
                "encoding": {"text": {"field": "devices", "type": "quantitative"}},
            },
        ],
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
            values.append(
                {"truth": truth, "predicted": predicted, "count": count, "share": count / total if total else 0.0}
            )
    encoding = {
        "x": {
            "field": "predicted",
            "type": "nominal",
            "sort": columns,
            "title": "predicted",
            "axis": {"labelAngle": -35, "labelOverlap": False, "labelLimit": 200},
        },
        "y": {
            "field": "truth",
            "type": "nominal",
            "sort": list(ACTIVITIES),
            "title": "truth",
            "axis": {"labelLimit": 200},
        },
    }
    return {
        "data": {"values": values},
        "height": {"step": 30},
        "encoding": encoding,
        "layer": [
            {
                "mark": "rect",
                "encoding": {
                    "color": {
                        "field": "share",
                        "type": "quantitative",
                        "scale": {"scheme": "blues", "domain": [0, 1]},
                        "legend": None,
                    },
                    "tooltip": [
                        {"field": "truth"},
                        {"field": "predicted"},
                        {"field": "count"},
                        {"field": "share", "format": ".1%"},
                    ],
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
