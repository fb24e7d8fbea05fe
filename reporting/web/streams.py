"""The streams pages of `/dashboard/`: the operator's streams, importing one from an
export file, and a page per stream with its graph drawn, its versions, its recent
executions and what each node did (records in, out and failed, and its last error), and
its export.

Imports go through `streams.services.stream_import`, the API's import, so a file is
checked exactly as `POST …/streams/import` checks it; exports are the bytes
`GET …/streams/{id}/export` answers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Func, IntegerField, OuterRef, Subquery, Sum
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Coalesce
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_http_methods, require_safe
from unfold.widgets import BASE_INPUT_CLASSES, UnfoldAdminSelectWidget

from collection.models import Collector
from common.admin import style_widget
from common.ids import uuid_or_none
from common.json import DecodeError, dumps, loads
from reporting.web.access import operator_object_or_404, operator_page
from reporting.web.shell import DASHBOARD, shell_render
from streams import services
from streams.api.views import MAX_IMPORT_BYTES
from streams.catalogue import FUNCTIONS
from streams.models import (
    NodeCounter,
    NodeCounterDelta,
    NodeError,
    Solution,
    Stream,
    StreamExecution,
    StreamVersion,
)
from streams.runtime.runner import node_counts
from streams.selectors import VersionNotFound, stream_config_with_keys, stream_version

STREAMS_PER_PAGE = 25
VERSIONS_SHOWN = 20
EXECUTIONS_SHOWN = 10


# -- The diagram --------------------------------------------------------------------------

NODE_WIDTH, NODE_HEIGHT = 132, 64
MARGIN = 24
# Room around a node group's nodes, and above them for the group's name.
GROUP_PAD, GROUP_HEADER = 12, 22
# Where nodes go when the configuration does not place them: a column per step.
AUTO_COLUMN, AUTO_ROW = 190, 100
NAME_CHARACTERS = 17
# Colours an annotation may name, as the export writes them; others are drawn gray.
NOTE_COLOURS = {"purple", "gray", "blue", "green", "yellow", "orange", "red", "pink", "teal"}


@dataclass(frozen=True)
class DiagramNode:
    index: int
    id: str
    name: str
    label: str  # the name, cut to fit the box
    type: str
    kind: str  # reader, transform, writer (the catalogue's), or "unknown"
    description: str
    x: int
    y: int
    count_in: int
    count_out: int
    count_failed: int
    error: NodeError | None
    annotation: str

    width = NODE_WIDTH
    height = NODE_HEIGHT

    # Where the texts of the node's box go (names say which).
    @property
    def text_x(self) -> int:
        return self.x + 10

    @property
    def name_y(self) -> int:
        return self.y + 21

    @property
    def type_y(self) -> int:
        return self.y + 38

    @property
    def counts_y(self) -> int:
        return self.y + 54

    @property
    def badge_x(self) -> int:
        return self.x + NODE_WIDTH

    @property
    def function(self) -> str:
        return self.type.rsplit("/", 1)[-1].replace("_", " ")

    @property
    def counts_label(self) -> str:
        return f"{_compact(self.count_in)} in · {_compact(self.count_out)} out"

    @property
    def failed_label(self) -> str:
        return _compact(self.count_failed)


@dataclass(frozen=True)
class DiagramEdge:
    path: str
    label: str  # the output it leaves by, for nodes with several
    label_x: int
    label_y: int


@dataclass(frozen=True)
class DiagramGroup:
    number: int
    name: str
    x: int
    y: int
    width: int
    height: int
    colour: str
    annotation: str
    node_names: list[str] = field(default_factory=list)
    label_characters: int = 40

    @property
    def label(self) -> str:
        if len(self.name) <= self.label_characters:
            return self.name
        return self.name[: self.label_characters - 1] + "…"

    @property
    def text_x(self) -> int:
        return self.x + 10

    @property
    def text_y(self) -> int:
        return self.y + 16


@dataclass(frozen=True)
class Diagram:
    left: int
    top: int
    width: int
    height: int
    nodes: list[DiagramNode]
    edges: list[DiagramEdge]
    groups: list[DiagramGroup]
    annotation: str
    annotation_colour: str


def _compact(count: int) -> str:
    """1234 → "1.2k": node boxes are small."""
    for size, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if count >= size:
            return f"{count / size:.1f}".rstrip("0").rstrip(".") + suffix
    return str(count)


def _number(value: Any) -> int | None:
    """A coordinate of the editor, in whole units (SVG and the templates need no more)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return round(value)
    return None


def _note(value: Any) -> tuple[str, str]:
    """(text, colour) of an annotation as the export writes it: {"text", "color"}."""
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return "", "gray"
    colour = str(value.get("color", "gray")).lower().replace("grey", "gray")
    return value["text"].strip(), colour if colour in NOTE_COLOURS else "gray"


def _auto_places(node_ids: list[str], edges: list[tuple[str, str]]) -> dict[str, tuple]:
    """Places for nodes the configuration does not place: a column per step from the
    readers (the longest path to the node), the nodes of a column one under another."""
    incoming: dict[str, int] = {node_id: 0 for node_id in node_ids}
    successors: dict[str, list[str]] = defaultdict(list)
    for source, target in edges:
        successors[source].append(target)
        incoming[target] += 1
    depth = dict.fromkeys(node_ids, 0)
    ready = [node_id for node_id in node_ids if incoming[node_id] == 0]
    while ready:
        node_id = ready.pop(0)
        for target in successors[node_id]:
            depth[target] = max(depth[target], depth[node_id] + 1)
            incoming[target] -= 1
            if incoming[target] == 0:
                ready.append(target)
    rows: dict[int, int] = defaultdict(int)
    places = {}
    for node_id in node_ids:
        column = depth[node_id]
        places[node_id] = (column * AUTO_COLUMN, rows[column] * AUTO_ROW)
        rows[column] += 1
    return places


def _output_names(node: dict) -> dict[str, str]:
    """A node's output ids and their names (see streams.catalogue on the two shapes)."""
    params = node.get("params")
    multi = params.get("multiOutput") if isinstance(params, dict) else None
    if not isinstance(multi, dict):
        return {}
    names = {}
    fixed = multi.get("fixed")
    if isinstance(fixed, dict):
        for name, entry in fixed.items():
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                names[entry["id"]] = str(name)
    configurable = multi.get("configurable")
    outputs = configurable.get("outputs") if isinstance(configurable, dict) else None
    for entry in outputs if isinstance(outputs, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            names[entry["id"]] = str(entry.get("name") or "")
    return names


def diagram_build(
    config: dict, counts: dict[str, dict[str, int]], errors: dict[str, NodeError]
) -> Diagram:
    """Where everything of a stream configuration goes on the drawing.

    1. Nodes stand where the editor placed them (`x`, `y`); if any node has no place,
       every node is laid out by step instead, so none overlaps another.
    2. Edges run from the right of their source to the left of their target; one
       leaving by a named output (a split's route, the meter's `threshold`) says which.
    3. Node groups frame their nodes, numbered so the list under the drawing can give
       their annotations in full.
    4. The drawing is as large as what it holds, with a margin.
    """
    nodes = [
        node
        for node in config.get("nodes") or []
        if isinstance(node, dict) and isinstance(node.get("id"), str)
    ]
    by_id = {node["id"]: node for node in nodes}
    links = [
        edge
        for edge in config.get("edges") or []
        if isinstance(edge, dict) and edge.get("from") in by_id and edge.get("to") in by_id
    ]
    placed = {node["id"]: (_number(node.get("x")), _number(node.get("y"))) for node in nodes}
    if any(x is None or y is None for x, y in placed.values()):
        placed = _auto_places(list(by_id), [(edge["from"], edge["to"]) for edge in links])

    drawn = []
    for index, node in enumerate(nodes):
        x, y = placed[node["id"]]
        name = str(node.get("name") or node["id"])
        spec = FUNCTIONS.get(node.get("type"))
        count = counts.get(node["id"], {})
        drawn.append(
            DiagramNode(
                index=index,
                id=node["id"],
                name=name,
                label=name if len(name) <= NAME_CHARACTERS else name[: NAME_CHARACTERS - 1] + "…",
                type=str(node.get("type") or ""),
                kind=spec.kind if spec else "unknown",
                description=spec.description if spec else "A function Tally does not know.",
                x=x,
                y=y,
                count_in=count.get("in", 0),
                count_out=count.get("out", 0),
                count_failed=count.get("failed", 0),
                error=errors.get(node["id"]),
                annotation=_note(node.get("annotation"))[0],
            )
        )
    drawn.sort(key=lambda node: (node.x, node.y, node.index))
    where = {node.id: node for node in drawn}

    edges = []
    for edge in links:
        source, target = where[edge["from"]], where[edge["to"]]
        x1, y1 = source.x + NODE_WIDTH, source.y + NODE_HEIGHT / 2
        x2, y2 = target.x, target.y + NODE_HEIGHT / 2
        bend = max(30.0, abs(x2 - x1) / 2)
        # The curve's middle (t = 1/2 of the cubic Bézier) carries the output's name.
        middle_x = (x1 + 3 * (x1 + bend) + 3 * (x2 - bend) + x2) / 8
        middle_y = (y1 + y2) / 2
        edges.append(
            DiagramEdge(
                path=f"M {x1:g} {y1:g} C {x1 + bend:g} {y1:g}, {x2 - bend:g} {y2:g}, {x2:g} {y2:g}",
                label=_output_names(by_id[source.id]).get(str(edge.get("output")), ""),
                label_x=round(middle_x),
                label_y=round(middle_y) - 4,
            )
        )

    framed = []
    for group in config.get("nodeGroups") or []:
        if not isinstance(group, dict) or not isinstance(group.get("nodeIds"), list):
            continue
        members = [where[i] for i in group["nodeIds"] if isinstance(i, str) and i in where]
        if members:
            left = min(node.x for node in members) - GROUP_PAD
            top = min(node.y for node in members) - GROUP_PAD - GROUP_HEADER
            framed.append((left, top, group, members))
    groups = []
    # Numbered as they are read, left to right and top to bottom.
    for number, (left, top, group, members) in enumerate(
        sorted(framed, key=lambda item: item[:2]), start=1
    ):
        text, colour = _note(group.get("annotation"))
        width = max(node.x for node in members) + NODE_WIDTH + GROUP_PAD - left
        groups.append(
            DiagramGroup(
                number=number,
                name=str(group.get("name") or ""),
                x=left,
                y=top,
                width=width,
                height=max(node.y for node in members) + NODE_HEIGHT + GROUP_PAD - top,
                colour=colour,
                annotation=text,
                node_names=[node.name for node in members],
                # What of "<number> · <name>" fits the frame, at about 7 units a character.
                label_characters=max(8, (width - 20) // 7 - len(str(number)) - 3),
            )
        )

    boxes = [(node.x, node.y, NODE_WIDTH, NODE_HEIGHT) for node in drawn]
    boxes += [(group.x, group.y, group.width, group.height) for group in groups]
    if boxes:
        left = min(x for x, _, _, _ in boxes) - MARGIN
        top = min(y for _, y, _, _ in boxes) - MARGIN
        right = max(x + width for x, _, width, _ in boxes) + MARGIN
        bottom = max(y + height for _, y, _, height in boxes) + MARGIN
    else:
        left, top, right, bottom = 0, 0, 0, 0
    annotation, annotation_colour = _note(config.get("annotation"))
    return Diagram(
        left=left,
        top=top,
        width=right - left,
        height=bottom - top,
        nodes=drawn,
        edges=edges,
        groups=groups,
        annotation=annotation,
        annotation_colour=annotation_colour,
    )


# -- Reads ----------------------------------------------------------------------------------


def _node_count():
    """The number of nodes of a version's configuration, counted by PostgreSQL (the
    configuration itself, up to 2 MB, is not loaded)."""
    return Func(
        KeyTransform("nodes", "config"), function="jsonb_array_length", output_field=IntegerField()
    )


def _failed_total():
    """Records failed at any of the stream's nodes, all time: folded counters plus the
    deltas not folded yet."""

    def total(model):
        return Coalesce(
            Subquery(
                model.objects.filter(stream_id=OuterRef("pk"), kind=NodeCounter.Kind.FAILED)
                .order_by()
                .values("stream_id")
                .annotate(total=Sum("count"))
                .values("total")
            ),
            0,
        )

    return total(NodeCounter) + total(NodeCounterDelta)


def streams_listed(operator):
    """The operator's streams by name, each with its node count, records failed, last
    error time and latest execution: one query for a page, whatever its length."""
    latest = StreamVersion.objects.filter(stream_id=OuterRef("pk"), is_latest=True)
    executions = StreamExecution.objects.filter(stream_id=OuterRef("pk")).order_by(
        "-created_at", "-id"
    )
    return (
        Stream.objects.filter(operator=operator)
        .select_related("solution")
        .annotate(
            node_count=Subquery(latest.annotate(count=_node_count()).values("count")[:1]),
            records_failed=_failed_total(),
            last_error_at=Subquery(
                NodeError.objects.filter(stream_id=OuterRef("pk")).order_by("-at").values("at")[:1]
            ),
            last_execution_status=Subquery(executions.values("status")[:1]),
            last_execution_at=Subquery(executions.values("created_at")[:1]),
        )
        .order_by("name", "id")
    )


def _collectors_read(operator, config: dict) -> list[dict]:
    """The collectors the configuration's readers name: live ones of the operator
    with their names; others by id alone (deleted since)."""
    wanted = []
    for node in config.get("nodes") or []:
        if not isinstance(node, dict) or node.get("type") != "readers/online_collection":
            continue
        params = node.get("params")
        if isinstance(params, dict):
            wanted.append(str(params.get("collectorId")))
    ids = {value: uuid_or_none(value) for value in wanted}
    found = {
        collector.pk: collector
        for collector in Collector.objects.live().filter(
            operator=operator, pk__in=[i for i in ids.values() if i is not None]
        )
    }
    return [{"id": value, "collector": found.get(ids[value])} for value in ids]


def _duration(start, end) -> str:
    """How long a run took, to the second ("" while it has not ended)."""
    if start is None or end is None:
        return ""
    seconds = max(0, round((end - start).total_seconds()))
    if seconds < 1:
        return "under a second"
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    parts = [(hours, "h"), (minutes, "min"), (seconds, "s")]
    return " ".join(f"{value} {unit}" for value, unit in parts if value)


def _version_or_404(stream: Stream, tag: str | None) -> StreamVersion:
    if tag is not None and "\x00" in tag:
        raise Http404  # no tag holds one (PostgreSQL text cannot)
    try:
        return stream_version(stream, tag)
    except VersionNotFound:
        raise Http404 from None


# -- Pages ----------------------------------------------------------------------------------


@operator_page
@require_safe
def streams(request):
    """`/dashboard/streams/`: the operator's streams, a page at a time."""
    page = Paginator(streams_listed(request.operator), STREAMS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    return shell_render(
        request,
        DASHBOARD,
        "dashboard/streams.html",
        {"title": "Streams", "page": page, "now": timezone.now()},
    )


@operator_page
@require_safe
def stream_detail(request, stream_id):
    """`/dashboard/streams/<id>/`: the diagram of the current version (or of the tagged
    one `?tag=` names), what each node did, versions, executions and settings."""
    stream = operator_object_or_404(
        request, Stream.objects.select_related("solution"), pk=stream_id
    )
    tag = request.GET.get("tag") or None
    version = _version_or_404(stream, tag)
    config = stream_config_with_keys(stream, version)
    errors = {
        error.node_id: error
        for error in NodeError.objects.filter(operator=request.operator, stream=stream)
    }
    diagram = diagram_build(config, node_counts(stream.pk), errors)
    drawn = {node.id for node in diagram.nodes}
    versions = stream.versions.defer("config").annotate(node_count=_node_count())
    current = versions.filter(is_latest=True).first()
    tagged = versions.filter(is_latest=False).order_by("-created_at", "-id")
    tagged_shown = list(tagged[:VERSIONS_SHOWN])
    executions = [
        {"execution": execution, "took": _duration(execution.started_at, execution.ended_at)}
        for execution in StreamExecution.objects.filter(
            operator=request.operator, stream=stream
        ).order_by("-created_at", "-id")[:EXECUTIONS_SHOWN]
    ]
    return shell_render(
        request,
        DASHBOARD,
        "dashboard/streams_detail.html",
        {
            "title": stream.name,
            "now": timezone.now(),
            "stream": stream,
            "version": version,
            "viewing_tag": tag,
            "diagram": diagram,
            # Nodes of earlier versions keep their last error; the page says so.
            "former_errors": sorted(
                (error for node_id, error in errors.items() if node_id not in drawn),
                key=lambda error: error.at,
                reverse=True,
            ),
            "collectors_read": _collectors_read(request.operator, config),
            "current": current,
            "tagged": tagged_shown,
            "tagged_more": (
                tagged.count() - VERSIONS_SHOWN if len(tagged_shown) == VERSIONS_SHOWN else 0
            ),
            "executions": executions,
        },
    )


@operator_page
@require_safe
def stream_export(request, stream_id):
    """The stream's configuration as `GET …/streams/{id}/export` answers it (with
    `?tag=`, a tagged version's), as a file to download. Viewers may export: it reads."""
    stream = operator_object_or_404(request, Stream, pk=stream_id)
    tag = request.GET.get("tag") or None
    version = _version_or_404(stream, tag)
    response = HttpResponse(
        dumps(stream_config_with_keys(stream, version)), content_type="application/json"
    )
    filename = f"{stream.name} ({tag}).json" if tag else f"{stream.name}.json"
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response


CONFLICT_CHOICES = [
    ("overwrite", "Overwrite it: the file becomes its current version"),
    ("create-new", "Import a copy, named “<name> (Copy)”"),
    ("skip", "Skip the file: the stream stays as it is"),
]
IMPORT_OUTCOMES = {
    "created": "imported",
    "overwritten": "imported over the stream of that name (its new current version)",
    "created-new": "imported as a copy",
    "skipped": "not imported: a stream of that name exists and was left as it is",
}


class StreamImportForm(forms.Form):
    """An export file and what to do with a stream of the same name, as the API's
    import takes them."""

    file = forms.FileField(
        label="Export file",
        help_text="A stream as exported (JSON in the Usage Engine export format), at most 2 MB.",
        # The theme's text input look: its file classes expect the admin's own widget.
        widget=forms.FileInput(
            attrs={"accept": ".json,application/json", "class": " ".join(BASE_INPUT_CLASSES)}
        ),
    )
    # Shown when the operator has several solutions; else the default one is taken.
    solution = forms.ModelChoiceField(
        queryset=Solution.objects.none(),
        empty_label=None,
        required=False,
        widget=UnfoldAdminSelectWidget,
    )
    on_name_conflict = forms.ChoiceField(
        label="If a stream of that name exists",
        choices=CONFLICT_CHOICES,
        initial="overwrite",
        widget=UnfoldAdminSelectWidget,
    )
    allow_node_deletion = forms.BooleanField(
        label="Allow the import to delete nodes",
        required=False,
        help_text="When overwriting: without this, a file that drops nodes of the current "
        "version is refused.",
    )

    def __init__(self, *args, solutions, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["solution"].queryset = solutions
        if len(solutions) < 2:
            self.fields["solution"].widget = forms.HiddenInput()
        for form_field in self.fields.values():
            style_widget(form_field.widget)

    def clean_file(self) -> dict:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_IMPORT_BYTES:
            raise forms.ValidationError("The file is larger than 2 MB.")
        try:
            config = loads(upload.read())
        except DecodeError as exc:
            raise forms.ValidationError(
                f"This is not a stream export: it is not JSON ({getattr(exc, 'message', exc)})."
            ) from None
        if not isinstance(config, dict):
            raise forms.ValidationError(
                "This is not a stream export: the file must hold one JSON object, with the "
                "stream's name, nodes and edges."
            )
        return config


@operator_page
@require_http_methods(["GET", "HEAD", "POST"])
def stream_import(request):
    """`/dashboard/streams/import/`: upload an export file (admins only; the access gate
    refuses viewers' posts). The service is the API's: its problems, each naming the
    node or edge, are listed on the page."""
    solutions = Solution.objects.filter(operator=request.operator).order_by("-is_default", "name")
    form = StreamImportForm(
        request.POST or None,
        request.FILES or None,
        solutions=solutions,
        initial={"solution": solutions.first()},
    )
    problems: list[tuple[str, str]] = []
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            user = request.user
            try:
                result = services.stream_import(
                    operator=request.operator,
                    solution=data["solution"]
                    or services.solution_default(operator=request.operator),
                    config=data["file"],
                    on_name_conflict=data["on_name_conflict"],
                    allow_node_deletion=data["allow_node_deletion"],
                    actor={"type": "user", "id": str(user.pk), "name": user.get_username()},
                )
            except services.StreamConfigInvalid as exc:
                problems = exc.problems
            except services.StreamConflict as exc:
                problems = [("", str(exc))]
                status = 409
            else:
                outcome = IMPORT_OUTCOMES.get(result.action, result.action)
                messages.success(request, f"Stream “{result.stream.name}”: {outcome}.")
                return redirect("dashboard:streams-detail", stream_id=result.stream.pk)
    return shell_render(
        request,
        DASHBOARD,
        "dashboard/streams_import.html",
        {"title": "Import a stream", "form": form, "problems": problems},
        status=status,
    )
