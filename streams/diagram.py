"""A stream drawn as SVG, on the server: nodes where the editor placed them (`x`, `y`),
edges as arrows from one node to the next, node groups as frames around their nodes."""

from __future__ import annotations

from html import escape
from typing import Any

NODE_WIDTH, NODE_HEIGHT = 170, 54
MARGIN = 40


def _number(value: Any, default: float = 0.0) -> float:
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
    )


def stream_svg(config: dict[str, Any]) -> str:
    """The SVG text of a stream configuration; every text in it is escaped."""
    nodes = [node for node in config.get("nodes", []) if isinstance(node, dict)]
    if not nodes:
        return (
            '<svg xmlns="http://www.w3.org/2000/svg" width="200" height="40">'
            '<text x="10" y="25">No nodes</text></svg>'
        )
    places = {}
    for index, node in enumerate(nodes):
        # Nodes without a position (written by hand) go on a row of their own.
        x = _number(node.get("x"), index * (NODE_WIDTH + 40))
        y = _number(node.get("y"), 0.0)
        places[node.get("id")] = (x, y)
    left = min(x for x, _ in places.values()) - MARGIN
    top = min(y for _, y in places.values()) - MARGIN - 20
    right = max(x for x, _ in places.values()) + NODE_WIDTH + MARGIN
    bottom = max(y for _, y in places.values()) + NODE_HEIGHT + MARGIN
    width, height = right - left, bottom - top

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="stream-diagram" '
        f'viewBox="{left:g} {top:g} {width:g} {height:g}" width="100%" '
        f'style="max-width: {width:g}px; height: auto" '
        f'font-family="sans-serif" font-size="12">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#555"/></marker></defs>',
    ]
    for group in config.get("nodeGroups", []) or []:
        members = [places[i] for i in group.get("nodeIds", []) if i in places]
        if not members:
            continue
        gx = min(x for x, _ in members) - 14
        gy = min(y for _, y in members) - 28
        gw = max(x for x, _ in members) + NODE_WIDTH + 14 - gx
        gh = max(y for _, y in members) + NODE_HEIGHT + 14 - gy
        parts.append(
            f'<g class="node-group"><rect x="{gx:g}" y="{gy:g}" width="{gw:g}" height="{gh:g}" '
            f'rx="8" fill="#f3f0fa" stroke="#b9a9dc" stroke-dasharray="4 3"/>'
            f'<text x="{gx + 8:g}" y="{gy + 16:g}" fill="#5b4a8a">'
            f"{escape(str(group.get('name', '')))}</text></g>"
        )
    for edge in config.get("edges", []) or []:
        if edge.get("from") not in places or edge.get("to") not in places:
            continue
        (x1, y1), (x2, y2) = places[edge["from"]], places[edge["to"]]
        parts.append(
            f'<line class="edge" x1="{x1 + NODE_WIDTH:g}" y1="{y1 + NODE_HEIGHT / 2:g}" '
            f'x2="{x2:g}" y2="{y2 + NODE_HEIGHT / 2:g}" stroke="#555" stroke-width="1.5" '
            f'marker-end="url(#arrow)"/>'
        )
    for node in nodes:
        x, y = places[node.get("id")]
        kind = str(node.get("type", ""))
        fill = {"readers": "#e3f2e1", "writers": "#fde8e4"}.get(kind.split("/")[0], "#e6eefc")
        parts.append(
            f'<g class="node" data-node-id="{escape(str(node.get("id")))}">'
            f'<rect x="{x:g}" y="{y:g}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="6" '
            f'fill="{fill}" stroke="#7a8aa6"/>'
            f'<text x="{x + 10:g}" y="{y + 22:g}" font-weight="bold">'
            f"{escape(str(node.get('name', ''))[:24])}</text>"
            f'<text x="{x + 10:g}" y="{y + 40:g}" fill="#555">{escape(kind)}</text></g>'
        )
    annotation = config.get("annotation")
    if isinstance(annotation, dict) and annotation.get("text"):
        text = str(annotation["text"]).splitlines()[0][:140]
        parts.append(f'<text x="{left + 10:g}" y="{top + 18:g}" fill="#333">{escape(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)
