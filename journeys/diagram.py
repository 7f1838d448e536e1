"""The journey's diagram on its admin page: boxes and arrows drawn as SVG on the server, with live counts per step.

Steps are boxes in position order, top to bottom. An arrow to the box right below is drawn straight; any other edge
(a branch's "no", a split's path B, a jump) runs in a lane on the right. Each box shows the step's counts: how many
contacts reached it (entered), are waiting to run it, and ended there (completed, exited, failed).
"""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Count, Max
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _

from journeys.models import Enrollment, EnrollmentLog, Journey, Step

BOX_W, BOX_H, GAP, LEFT, TOP, LANE = 300, 58, 34, 20, 20, 18
ENDED = {"exited": "exited", "failed": "failed"}  # completions: counted at the last step run (step_counts)


def step_counts(journey: Journey) -> dict[int, dict[str, int]]:
    """Per step: entered (contacts that ran it), waiting (to run it), and runs that ended there."""
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    logs = (
        EnrollmentLog.objects.filter(step__journey=journey)
        .values("step_id", "action")
        .annotate(n=Count("enrollment_id", distinct=True))
    )
    entered: dict[int, int] = defaultdict(int)
    for row in logs:
        if row["action"] in ENDED:
            counts[row["step_id"]][row["action"]] += row["n"]
        elif row["action"] not in ("retry", "completed"):
            entered[row["step_id"]] = max(entered[row["step_id"]], row["n"])
    for step_id, n in entered.items():
        counts[step_id]["entered"] = n
    # A run that reaches the journey's end is logged without a step: it completed at the last step it ran.
    last_runs = (
        EnrollmentLog.objects.filter(
            enrollment__journey=journey, enrollment__status=Enrollment.Status.COMPLETED, step__isnull=False
        )
        .values("enrollment_id")
        .annotate(last=Max("id"))
        .values("last")
    )
    for row in EnrollmentLog.objects.filter(id__in=last_runs).values("step_id").annotate(n=Count("id")).order_by():
        counts[row["step_id"]]["completed"] = row["n"]
    for row in (
        journey.enrollments.filter(status__in=Enrollment.OPEN)
        .exclude(current_step=None)
        .values("current_step_id")
        .annotate(n=Count("id"))
    ):
        counts[row["current_step_id"]]["waiting"] = row["n"]
    return counts


def journey_diagram(journey: Journey) -> SafeString:
    from journeys.services.engine import Graph

    steps = list(journey.steps.order_by("position", "id"))
    if not steps:
        return format_html("<p>{}</p>", _("No steps yet."))
    graph = Graph(steps)
    counts = step_counts(journey)
    row = {s.pk: i for i, s in enumerate(steps)}
    first = journey.first_step_id or steps[0].pk

    def y(index: int) -> int:
        return TOP + index * (BOX_H + GAP)

    edges: list[tuple[int, int | None, str]] = []
    for step in steps:
        following = graph.next_of(step)
        if step.kind == Step.Kind.EXIT:
            continue
        if step.kind in (Step.Kind.BRANCH, Step.Kind.RANDOM_SPLIT):
            yes, no = (_("yes"), _("no")) if step.kind == Step.Kind.BRANCH else ("A", "B")
            edges.append((step.pk, following, yes))
            edges.append((step.pk, step.no_step_id, no))
        else:
            edges.append((step.pk, following, ""))
    parts: list[str] = []
    lane = 0
    end_y = y(len(steps))
    for source, target, label in edges:
        sy = y(row[source]) + BOX_H
        last = row[source] == len(steps) - 1
        if (target is not None and row.get(target) == row[source] + 1) or (target is None and last and not label):
            x = LEFT + BOX_W // 2
            parts.append(f'<line x1="{x}" y1="{sy}" x2="{x}" y2="{sy + GAP}" class="edge" marker-end="url(#arrow)"/>')
            if label:
                parts.append(f'<text x="{x + 6}" y="{sy + 14}" class="label">{escape(label)}</text>')
            continue
        lane += 1
        x0, xl = LEFT + BOX_W, LEFT + BOX_W + lane * LANE
        y0 = y(row[source]) + BOX_H // 2 + (8 if label and label in (_("no"), "B") else 0)
        y1 = y(row[target]) + BOX_H // 2 if target in row else end_y + 12
        x1 = LEFT + BOX_W if target in row else LEFT + BOX_W // 2 + 30
        parts.append(f'<path d="M{x0} {y0} H{xl} V{y1} H{x1}" class="edge" fill="none" marker-end="url(#arrow)"/>')
        if label:
            parts.append(f'<text x="{x0 + 3}" y="{y0 - 3}" class="label">{escape(label)}</text>')
    for index, step in enumerate(steps):
        c = counts.get(step.pk, {})
        top = y(index)
        stats = _("entered %(entered)d · waiting %(waiting)d · completed %(completed)d · exited %(exited)d") % {
            "entered": c.get("entered", 0),
            "waiting": c.get("waiting", 0),
            "completed": c.get("completed", 0),
            "exited": c.get("exited", 0),
        }
        if c.get("failed"):
            stats += " · " + _("failed %(n)d") % {"n": c["failed"]}
        css = "box first" if step.pk == first else "box"
        parts.append(
            f'<g class="step" data-step="{step.pk}"><rect x="{LEFT}" y="{top}" width="{BOX_W}" height="{BOX_H}" rx="6" '
            f'class="{css} {escape(step.kind)}"/>'
            f'<text x="{LEFT + 10}" y="{top + 20}" class="name">{escape(step.name)}</text>'
            f'<text x="{LEFT + 10}" y="{top + 36}" class="kind">{escape(step.get_kind_display())}</text>'
            f'<text x="{LEFT + 10}" y="{top + 51}" class="stats">{escape(stats)}</text></g>'
        )
    parts.append(f'<text x="{LEFT + BOX_W // 2 - 12}" y="{end_y + 16}" class="end">{escape(_("end"))}</text>')
    width = LEFT + BOX_W + (lane + 2) * LANE
    height = end_y + 30
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="loop-journey-diagram" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(journey.name)}">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0 0 L10 5 L0 10 z"/></marker></defs>'
        "<style>.box{fill:#f6f8fa;stroke:#79aec8;stroke-width:1.5}.box.first{stroke:#417690;stroke-width:2.5}"
        ".box.send{fill:#eef7ee}.box.branch,.box.random_split{fill:#fff8e6}.box.exit{fill:#fbeaea}"
        ".name{font:600 13px sans-serif}.kind{font:11px sans-serif;fill:#555}.stats{font:11px sans-serif;fill:#333}"
        ".edge{stroke:#666;stroke-width:1.3}.label{font:11px sans-serif;fill:#417690}"
        ".end{font:12px sans-serif;fill:#666}"
        "</style>" + "".join(parts) + "</svg>"
    )
    return mark_safe(svg)  # noqa: S308 (every text above is escaped; numbers are ints)
