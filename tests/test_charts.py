"""engine.web.charts: the console's SVG charts, parsed back with xml.etree."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from markupsafe import Markup

from engine.web.charts import Frame, bar_chart, buckets, histogram, line_chart, nice_top

NS = {"s": "http://www.w3.org/2000/svg"}
HOSTILE = '<script>alert("x")</script> & co'


def parse(svg: Markup) -> ET.Element:
    assert isinstance(svg, Markup)
    return ET.fromstring(str(svg))


def titles(root: ET.Element, tag: str) -> list[str]:
    return [el.findtext("s:title", namespaces=NS) or "" for el in root.iter(f"{{{NS['s']}}}{tag}")]


def texts(root: ET.Element) -> list[str]:
    return [el.text or "" for el in root.iter(f"{{{NS['s']}}}text")]


def test_bar_chart_geometry_labels_and_hover_text() -> None:
    """Bars are proportional to their values on a 0..round-top axis, each with its label on
    the x axis and a `<title>` with label and value; the svg is an accessible image."""
    root = parse(bar_chart([("cardiology", 4), ("ortho", 2), ("derm", 0)], title="Booked",
                           x_label="specialty", y_label="referrals"))
    assert root.get("role") == "img" and root.get("aria-label") == "Booked"
    rects = list(root.iter(f"{{{NS['s']}}}rect"))
    heights = [float(r.get("height", "")) for r in rects]
    assert heights[0] == pytest.approx(2 * heights[1]) and heights[2] == 0
    bottoms = {float(r.get("y", "")) + float(r.get("height", "")) for r in rects}
    assert len(bottoms) == 1  # all bars stand on the x axis
    assert titles(root, "rect") == ["cardiology: 4", "ortho: 2", "derm: 0"]
    labels = texts(root)
    assert {"cardiology", "ortho", "derm", "specialty", "referrals", "0", "5"} <= set(labels)


def test_every_label_is_escaped() -> None:
    """A label, series name, title or unit with markup stays text: the SVG still parses and no
    element but svg's own comes out of it."""
    for svg in (bar_chart([(HOSTILE, 1)], title=HOSTILE, x_label=HOSTILE, unit=HOSTILE),
                line_chart({HOSTILE: [(HOSTILE, 1.0)]}, title=HOSTILE, y_label=HOSTILE),
                histogram([(HOSTILE, 3)], title=HOSTILE)):
        root = parse(svg)
        assert not list(root.iter(f"{{{NS['s']}}}script")) and not list(root.iter("script"))
        assert root.get("aria-label") == HOSTILE
        assert HOSTILE in texts(root) or any(HOSTILE in t for t in titles(root, "rect"))
        assert "<script>" not in str(svg)


def test_no_inline_style_anywhere() -> None:
    """No `style` attribute and no `<style>` element: the console's CSP forbids inline styles."""
    svgs = [bar_chart([("a", 1)], title="t"), line_chart({"s": [("a", 1.0)]}, title="t"),
            histogram([1.0, 2.0], title="t"), bar_chart([], title="t")]
    for svg in svgs:
        root = parse(svg)
        assert all("style" not in el.attrib for el in root.iter())
        assert not list(root.iter(f"{{{NS['s']}}}style"))


def test_empty_charts_say_so() -> None:
    """Nothing to draw: the chart keeps its size and title and says there is no data, without
    axes or bars."""
    for svg in (bar_chart([], title="Empty"), histogram([], title="Empty"),
                line_chart({"rate": [("Mon", None)]}, title="Empty"), line_chart({}, title="E")):
        root = parse(svg)
        assert root.get("role") == "img"
        assert texts(root) == ["No data for this period"]
        assert not list(root.iter(f"{{{NS['s']}}}rect"))
        assert not list(root.iter(f"{{{NS['s']}}}line"))


def test_line_chart_points_gaps_and_legend() -> None:
    """A point per non-None value, x evenly spaced, higher values higher up; a gap leaves its
    point out; two series get a legend."""
    frame = Frame(width=400, height=200)
    root = parse(line_chart({"closed": [("W1", 0.5), ("W2", None), ("W3", 1.0)],
                             "booked": [("W1", 0.25), ("W2", 0.5), ("W3", 0.75)]},
                            title="Closed loop", unit="", top=1.0, frame=frame))
    circles = list(root.iter(f"{{{NS['s']}}}circle"))
    assert len(circles) == 5
    closed = circles[:2]
    xs = [float(c.get("cx", "")) for c in closed]
    ys = [float(c.get("cy", "")) for c in closed]
    assert xs[1] - xs[0] == pytest.approx(frame.plot_width)
    assert ys[1] < ys[0]  # 1.0 above 0.5
    assert titles(root, "circle")[:2] == ["closed W1: 0.5", "closed W3: 1"]
    legend = [el.text for el in root.iter(f"{{{NS['s']}}}text")
              if "chart-legend" in el.get("class", "")]
    assert legend == ["closed", "booked"]
    assert {"W1", "W2", "W3"} <= set(texts(root))


def test_line_chart_single_point_is_centred() -> None:
    """One point sits in the middle of the plot rather than on the y axis."""
    frame = Frame()
    root = parse(line_chart({"rate": [("only", 3.0)]}, title="t", frame=frame))
    (circle,) = root.iter(f"{{{NS['s']}}}circle")
    assert float(circle.get("cx", "")) > 48 + frame.plot_width / 4


def test_histogram_buckets_raw_values() -> None:
    """Raw values are counted in `[a, b)` buckets and a last open one; bars touch."""
    assert buckets([0, 3, 7, 20, 100, -1], (0, 7, 14)) == [
        ("0–7", 3.0), ("7–14", 1.0), ("≥ 14", 2.0)]
    root = parse(histogram([1, 2, 8, 30], title="Days to appointment", edges=(0, 7, 14),
                           x_label="days"))
    assert titles(root, "rect") == ["0–7: 2", "7–14: 1", "≥ 14: 1"]
    rects = list(root.iter(f"{{{NS['s']}}}rect"))
    right = float(rects[0].get("x", "")) + float(rects[0].get("width", ""))
    assert float(rects[1].get("x", "")) - right == pytest.approx(1.0)


@pytest.mark.parametrize(("value", "top"), [(0, 1), (1, 1), (3, 5), (7, 10), (11, 20),
                                            (0.3, 0.5), (240, 250), (1001, 2000)])
def test_nice_top(value: float, top: float) -> None:
    """The y axis ends on a round number at or above the largest value."""
    assert nice_top(value) == pytest.approx(top)
