"""Journey figures: the funnel per step of one journey and the seeds' metrics for the dashboard (lead-to-customer
conversion, review collection, re-engagement, repurchase). Reads only; grouped queries over bounded time windows.

Funnel per step, over the enrollments that entered in the period:

- **reached**: enrollments that got to the step (a log line at it, or standing at it now).
- **waiting**: enrollments standing at the step now (waiting for it, or due and about to run it).
- **sent**: for a message step, the messages the send pipeline actually sent (the step's send with status sent).
- **converted**: enrollments that reached the step and then reached the journey's goal.
- **exited here**: enrollments that ended at the step, by reason (an exit event, the goal, an exit step, a failure).

Time to convert: the median of ``goal_reached_at - entered_at`` over the period's converted enrollments.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import (
    CharField,
    Count,
    DateTimeField,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    Subquery,
    Value,
)
from django.db.models.functions import Cast, Coalesce, Concat, Least
from django.utils.translation import gettext_lazy as _

from campaigns.models import Send
from config.reports import Table, rate
from journeys.models import Enrollment, EnrollmentLog, Journey, Step

#: The periods (days) a journey's funnel can be shown for; the first is the default.
FUNNEL_PERIODS = (90, 30, 7, 365)
#: The sign-up event a lead counts from (the welcome playbook's trigger).
SIGNUP_EVENT = "Signed Up"
#: The order a lead, a win-back recipient or a customer is measured by.
ORDER_EVENT = "Order Completed"
ENDINGS = (Enrollment.Status.EXITED, Enrollment.Status.COMPLETED, Enrollment.Status.FAILED)


def _sent_send(step_ref: str = "step_id") -> Exists:
    key = Concat(
        Value("journey:"),
        Cast(OuterRef("enrollment_id"), CharField()),
        Value(":"),
        Cast(OuterRef(step_ref), CharField()),
        output_field=CharField(),
    )
    return Exists(Send.objects.filter(key=key, status=Send.Status.SENT))


def journey_funnel(journey: Journey, *, since: datetime) -> dict:
    """``{"steps": [row per step, in order], "end": row for the journey's end, "entered", "converted",
    "median_to_convert"}``; each row has reached, waiting, sent, converted, exited (total) and exits by reason."""
    enrollments = Enrollment.objects.filter(journey=journey, entered_at__gte=since)
    logs = EnrollmentLog.objects.filter(enrollment__in=enrollments)
    reached = dict(
        logs.filter(step__isnull=False)
        .values_list("step_id")
        .annotate(n=Count("enrollment_id", distinct=True))
        .order_by()
    )
    converted = dict(
        logs.filter(step__isnull=False, enrollment__goal_reached_at__isnull=False)
        .values_list("step_id")
        .annotate(n=Count("enrollment_id", distinct=True))
        .order_by()
    )
    sent = dict(
        logs.filter(action="send", step__isnull=False)
        .filter(_sent_send())
        .values_list("step_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    logged_here = EnrollmentLog.objects.filter(enrollment_id=OuterRef("id"), step_id=OuterRef("current_step_id"))
    standing = (
        enrollments.filter(status__in=Enrollment.OPEN, current_step__isnull=False)
        .values_list("current_step_id")
        .annotate(n=Count("id"), unlogged=Count("id", filter=~Q(Exists(logged_here))))
        .order_by()
    )
    waiting = {step_id: (n, unlogged) for step_id, n, unlogged in standing}
    exits: dict = {}
    for step_id, action, detail, n in (
        logs.filter(action__in=ENDINGS).values_list("step_id", "action", "detail").annotate(n=Count("id")).order_by()
    ):
        reason = exit_reason_label(action, detail)
        bucket = exits.setdefault(step_id, {})
        bucket[reason] = bucket.get(reason, 0) + n
    steps = []
    for step in journey.steps.order_by("position", "id"):
        n_waiting, unlogged = waiting.get(step.pk, (0, 0))
        by_reason = exits.get(step.pk, {})
        steps.append(
            {
                "step_id": step.pk,
                "position": step.position,
                "step": step.name,
                "kind": step.get_kind_display(),
                "reached": reached.get(step.pk, 0) + unlogged,
                "waiting": n_waiting,
                "sent": sent.get(step.pk, 0) if step.kind == Step.Kind.SEND else None,
                "converted": converted.get(step.pk, 0),
                "exited": sum(by_reason.values()),
                "exits": sorted(by_reason.items(), key=lambda item: -item[1]),
            }
        )
    totals = enrollments.aggregate(
        entered=Count("id"),
        converted=Count("id", filter=Q(goal_reached_at__isnull=False)),
        open=Count("id", filter=Q(status__in=Enrollment.OPEN)),
    )
    end = exits.get(None, {})
    return {
        "steps": steps,
        "end": {"exited": sum(end.values()), "exits": sorted(end.items(), key=lambda item: -item[1])},
        **totals,
        "conversion_rate": rate(totals["converted"], totals["entered"]),
        "median_to_convert": median_time_to_convert(enrollments),
    }


def exit_reason_label(action: str, detail: str) -> str:
    if action == Enrollment.Status.FAILED:
        return str(_("failed"))
    if action == Enrollment.Status.COMPLETED:
        return str(_("completed: %(detail)s") % {"detail": detail}) if detail else str(_("completed"))
    return detail or str(_("exited"))


def median_time_to_convert(enrollments) -> timedelta | None:
    """The median time from entering to the goal, in the database: a count, then the middle row(s) by duration."""
    converted = enrollments.filter(goal_reached_at__isnull=False, goal_reached_at__gte=F("entered_at"))
    n = converted.count()
    if not n:
        return None
    durations = (
        converted.annotate(took=ExpressionWrapper(F("goal_reached_at") - F("entered_at"), output_field=DurationField()))
        .order_by("took", "id")
        .values_list("took", flat=True)
    )
    middle = list(durations[(n - 1) // 2 : n // 2 + 1])
    return sum(middle, timedelta()) / len(middle)


def format_duration(value: timedelta | None) -> str:
    if value is None:
        return "-"
    minutes = int(value.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return str(_("%(d)dd %(h)dh") % {"d": days, "h": hours})
    if hours:
        return str(_("%(h)dh %(m)dm") % {"h": hours, "m": minutes})
    return str(_("%(m)dm") % {"m": minutes})


def journey_funnel_table(journey: Journey, funnel: dict) -> Table:
    rows = [
        {
            **row,
            "exits_text": "; ".join(f"{reason}: {n}" for reason, n in row["exits"]),
            "sent": "" if row["sent"] is None else row["sent"],
        }
        for row in funnel["steps"]
    ]
    if funnel["end"]["exited"]:
        rows.append(
            {
                "position": "",
                "step": str(_("end of the journey")),
                "kind": "",
                "reached": "",
                "waiting": "",
                "sent": "",
                "converted": "",
                "exited": funnel["end"]["exited"],
                "exits": funnel["end"]["exits"],
                "exits_text": "; ".join(f"{reason}: {n}" for reason, n in funnel["end"]["exits"]),
            }
        )
    return Table(
        key="funnel",
        title=_("Funnel per step"),
        columns=[
            ("position", "#"),
            ("step", _("step")),
            ("kind", _("kind")),
            ("reached", _("reached")),
            ("waiting", _("waiting")),
            ("sent", _("sent")),
            ("converted", _("converted")),
            ("exited", _("exited here")),
            ("exits_text", _("exits by reason")),
        ],
        rows=rows,
        permission="journeys.view_enrollment",
    )


def journey_sends_between(*, since: datetime, until: datetime) -> list[dict]:
    """Journey message steps run in ``[since, until)``, per journey and step: messages handed to the send pipeline
    and those actually sent. One grouped query."""
    rows = (
        EnrollmentLog.objects.filter(action="send", at__gte=since, at__lt=until, step__isnull=False)
        .values("enrollment__journey_id", "enrollment__journey__name", "step_id", "step__name")
        .annotate(messages=Count("id"), sent=Count("id", filter=Q(_sent_send())))
        .order_by("enrollment__journey__name", "step__position", "step_id")
    )
    return [
        {
            "journey": row["enrollment__journey__name"],
            "journey_id": row["enrollment__journey_id"],
            "step": row["step__name"],
            "messages": row["messages"],
            "sent": row["sent"],
        }
        for row in rows
    ]


def journey_funnel_chart(funnel: dict) -> dict:
    """Chart.js data: one horizontal bar group per step (reached, sent, converted, exited here)."""
    steps = funnel["steps"]
    series = [
        ("reached", _("reached")),
        ("sent", _("sent")),
        ("converted", _("converted")),
        ("exited", _("exited here")),
    ]
    return {
        "type": "bar",
        "indexAxis": "y",
        "labels": [f"{row['position']}. {row['step']}" for row in steps],
        "datasets": [
            {"type": "bar", "label": str(label), "data": [row[name] or 0 for row in steps]} for name, label in series
        ],
        "axes": {"x": str(_("enrollments"))},
    }


def journey_funnel_context(request, journey: Journey) -> dict:
    """The funnel on a journey's page for the period ``?days=`` (one of ``FUNNEL_PERIODS``), cached briefly."""
    from django.utils import timezone, translation

    from config.reports import cached, visible

    try:
        days = int(request.GET.get("days", FUNNEL_PERIODS[0]))
    except ValueError:
        days = FUNNEL_PERIODS[0]
    if days not in FUNNEL_PERIODS:
        days = FUNNEL_PERIODS[0]
    now = timezone.now()

    def compute() -> dict:
        funnel = journey_funnel(journey, since=now - timedelta(days=days))
        return {"funnel": funnel, "table": journey_funnel_table(journey, funnel)}

    result = cached(f"journey-funnel:{journey.pk}:{days}:{translation.get_language()}", compute)
    table = result["table"]
    tables = visible(request, [table])
    funnel = result["funnel"]
    return {
        "tables": [table],
        "table": tables[0] if tables else None,
        "funnel": funnel,
        "days": days,
        "periods": FUNNEL_PERIODS,
        "median": format_duration(funnel["median_to_convert"]),
        "chart": journey_funnel_chart(funnel) if tables and funnel["steps"] else None,
        "csv_query": f"days={days}",
    }


# --- Seed metrics -------------------------------------------------------------------------------------------------


def conversion_days() -> int:
    return settings.LOOP_LEAD_CONVERSION_DAYS


def lead_conversion(*, since: datetime, until: datetime, days: int) -> dict:
    """Leads: contacts whose first lead-form submission (entering a lead-form journey) or sign-up event in the
    period is their first touch as a lead, who had not ordered before it. Converted: a first order within ``days``
    after it. One query over the period's lead-form enrollments and sign-up events."""
    from crm.models import Contact, Event

    form = (
        Enrollment.objects.filter(
            contact_id=OuterRef("pk"),
            journey__trigger=Journey.Trigger.FORM,
            entered_at__gte=since,
            entered_at__lt=until,
        )
        .order_by("entered_at")
        .values("entered_at")[:1]
    )
    signup = (
        Event.objects.filter(
            contact_id=OuterRef("pk"), name=SIGNUP_EVENT, occurred_at__gte=since, occurred_at__lt=until
        )
        .order_by("occurred_at")
        .values("occurred_at")[:1]
    )
    form_ids = Enrollment.objects.filter(
        journey__trigger=Journey.Trigger.FORM, entered_at__gte=since, entered_at__lt=until
    ).values("contact_id")
    signup_ids = Event.objects.filter(name=SIGNUP_EVENT, occurred_at__gte=since, occurred_at__lt=until).values(
        "contact_id"
    )
    leads = (
        Contact.objects.filter(
            pk__in=form_ids.order_by().union(signup_ids.order_by())
        )  # one index lookup per lead, not a contact scan
        .annotate(form_at=Subquery(form), signup_at=Subquery(signup))
        .annotate(
            lead_at=Least(
                Coalesce("form_at", "signup_at", output_field=DateTimeField()),
                Coalesce("signup_at", "form_at", output_field=DateTimeField()),
            )
        )
        .filter(Q(first_order_at__isnull=True) | Q(first_order_at__gt=F("lead_at")))
    )
    deadline = ExpressionWrapper(F("lead_at") + Value(timedelta(days=days)), output_field=DateTimeField())
    figures = leads.aggregate(
        base=Count("pk"), part=Count("pk", filter=Q(first_order_at__isnull=False, first_order_at__lte=deadline))
    )
    return {**figures, "rate": rate(figures["part"], figures["base"])}


def survey_steps():
    """Message steps whose message carries the survey link (``#{이벤트.survey_url}``)."""
    text = "survey_url"
    return Step.objects.filter(kind=Step.Kind.SEND).filter(
        Q(body__contains=text)
        | Q(campaign__variants__body__contains=text)
        | Q(campaign__variants__html__contains=text)
        | Q(campaign__variants__link_url__contains=text)
    )


def survey_collection(*, since: datetime, until: datetime) -> dict:
    """Surveys sent: enrollments that passed a survey step in the period. Answered: those whose survey was answered
    (the answer is in the enrollment's trigger data)."""
    sent = Enrollment.objects.filter(
        Exists(
            EnrollmentLog.objects.filter(
                enrollment_id=OuterRef("pk"),
                action="send",
                step_id__in=survey_steps().values("pk"),
                at__gte=since,
                at__lt=until,
            )
        )
    )
    figures = sent.aggregate(base=Count("pk"), part=Count("pk", filter=Q(context__has_key="survey_score")))
    return {**figures, "rate": rate(figures["part"], figures["base"])}


def reengagement(*, since: datetime, until: datetime, days: int) -> dict:
    """Win-back recipients: enrollments in a win-back journey (made from the win-back playbook) that entered in the
    period. Came back: placed an order within ``days`` after entering."""
    from crm.models import Order

    deadline = ExpressionWrapper(OuterRef("entered_at") + Value(timedelta(days=days)), output_field=DateTimeField())
    came_back = Order.objects.filter(
        contact_id=OuterRef("contact_id"), placed_at__gt=OuterRef("entered_at"), placed_at__lte=deadline
    )
    enrollments = Enrollment.objects.filter(journey__playbook="winback", entered_at__gte=since, entered_at__lt=until)
    figures = enrollments.aggregate(base=Count("pk"), part=Count("pk", filter=Q(Exists(came_back))))
    return {**figures, "rate": rate(figures["part"], figures["base"])}


def repurchase(*, since: datetime) -> dict:
    """Customers: contacts who ordered in the period (their last order is in it). Repeat customers: those with two
    orders or more (ever). Read from the order counters on contacts."""
    from crm.models import Contact

    customers = Contact.objects.filter(last_order_at__gte=since, order_count__gte=1, erased_at__isnull=True)
    figures = customers.aggregate(base=Count("pk"), part=Count("pk", filter=Q(order_count__gte=2)))
    return {**figures, "rate": rate(figures["part"], figures["base"])}


def seed_metrics(*, now: datetime, days: int = 30) -> list[dict]:
    """The seeds' four rates over the last ``days`` days, each with its definition."""
    since = now - timedelta(days=days)
    n = conversion_days()
    return [
        {
            "key": "lead_to_customer",
            "name": _("Lead-to-customer conversion"),
            "definition": _(
                "Leads (a lead form submitted or a sign-up in the last %(days)d days, not customers before) who "
                "placed a first order within %(n)d days."
            )
            % {"days": days, "n": n},
            "base_label": _("leads"),
            "part_label": _("became customers"),
            **lead_conversion(since=since, until=now, days=n),
        },
        {
            "key": "review_collection",
            "name": _("Review (survey) collection rate"),
            "definition": _(
                "Journey surveys answered, out of the surveys sent in the last %(days)d days (a message step with "
                "the survey link #{이벤트.survey_url})."
            )
            % {"days": days},
            "base_label": _("surveys sent"),
            "part_label": _("answered"),
            **survey_collection(since=since, until=now),
        },
        {
            "key": "reengagement",
            "name": _("Re-engagement rate"),
            "definition": _(
                "Win-back recipients (entered a win-back journey in the last %(days)d days) who came back: an order "
                "within %(n)d days of the offer."
            )
            % {"days": days, "n": n},
            "base_label": _("win-back recipients"),
            "part_label": _("came back"),
            **reengagement(since=since, until=now, days=n),
        },
        {
            "key": "repurchase",
            "name": _("Repurchase rate"),
            "definition": _(
                "Customers with two orders or more, out of the customers with at least one (customers who ordered "
                "in the last 365 days)."
            ),
            "base_label": _("customers"),
            "part_label": _("repeat customers"),
            **repurchase(since=now - timedelta(days=365)),
        },
    ]
