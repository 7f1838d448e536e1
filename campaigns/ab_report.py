"""The A/B part of a run's report (docs/analytics.md): per variant the funnel (sent → delivered → opened → clicked →
converted), revenue, rates, the 95 % Wilson interval of the decisive rate, the two-proportion test against the
control (the first variant) and its verdict; the holdout's lift; and the automatic winner's decision in words.

The decisive rate is the conversion rate (converted ÷ sent) when the campaign has a goal event, otherwise the click
rate (clicked ÷ sent). Rates are over sent messages so that variants compare on the same base."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from campaigns import stats
from campaigns.models import Run
from campaigns.selectors import empty_figures, run_figures

VERDICTS = {
    stats.CONTROL: _("control"),
    stats.BETTER: _("better than the control"),
    stats.WORSE: _("worse than the control"),
    stats.NO_DIFFERENCE: _("no significant difference"),
    stats.TOO_SMALL: _("too small to decide"),
}

HOLDOUT_VERDICTS = {
    stats.BETTER: _("significantly more than the holdout"),
    stats.WORSE: _("significantly less than the holdout"),
    stats.NO_DIFFERENCE: _("no significant difference from the holdout"),
    stats.TOO_SMALL: _("too small to decide"),
}


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def p_value_display(value: float | None) -> str:
    if value is None:
        return "-"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def ab_report(run: Run, variant_names: list[str]) -> dict[str, Any]:
    """``{"metric", "variants": {name: {...}}, "holdout": {...} | None}`` for the run report."""
    figures = run_figures(run, now=timezone.now())
    has_goal = bool(run.campaign.goal_event)
    metric = "converted" if has_goal else "clicked"
    variants: dict[str, dict[str, Any]] = {}
    control = variant_names[0] if variant_names else None
    base = figures.get(control) or empty_figures()
    for name in variant_names:
        row = {**empty_figures(), **figures.get(name, {})}
        sent = row["sent"]
        low, high = stats.wilson_interval(row[metric], sent)
        if name == control:
            comparison = stats.Comparison(None, None, stats.CONTROL)
        else:
            comparison = stats.two_proportion_test(row[metric], sent, base[metric], base["sent"])
        variants[name] = {
            **row,
            "delivery_rate": percent(stats.rate(row["delivered"], sent)),
            "open_rate": percent(stats.rate(row["opened"], sent)),
            "click_rate": percent(stats.rate(row["clicked"], sent)),
            "conversion_rate": percent(stats.rate(row["converted"], sent)),
            "revenue_per_send": row["revenue"] / sent if sent else Decimal(0),
            "interval": f"{low:.1%} – {high:.1%}" if sent else "-",
            "p_value": p_value_display(comparison.p_value),
            "verdict": comparison.verdict,
            "verdict_label": VERDICTS[comparison.verdict],
        }
    holdout = None
    if "holdout" in figures and has_goal:
        members = figures["holdout"]["members"]
        converted = figures["holdout"]["converted"]
        treated = sum(v["sent"] for v in variants.values())
        treated_converted = sum(v["converted"] for v in variants.values())
        lift = stats.holdout_lift(treated_converted, treated, converted, members)
        low, high = stats.wilson_interval(converted, members)
        holdout = {
            "members": members,
            "converted": converted,
            "revenue": figures["holdout"]["revenue"],
            "conversion_rate": percent(stats.rate(converted, members)),
            "interval": f"{low:.1%} – {high:.1%}",
            "treated_rate": percent(stats.rate(treated_converted, treated)),
            "lift": percent(lift.lift) if lift.lift is not None else "-",
            "incremental": round(lift.incremental, 1),
            "p_value": p_value_display(lift.comparison.p_value),
            "verdict": lift.comparison.verdict,
            "verdict_label": HOLDOUT_VERDICTS[lift.comparison.verdict],
        }
    return {"metric": metric, "variants": variants, "holdout": holdout}


def winner_in_words(explanation: dict[str, Any]) -> str:
    """The automatic winner's decision (``Run.winner_explanation``) as a sentence for the marketer."""
    if not explanation or not explanation.get("variants"):
        return ""
    metric = explanation.get("metric")
    rows = list(explanation["variants"].values())
    parts = []
    for row in rows:
        if metric == "revenue_per_send":
            value = f"{row.get('revenue_per_send', 0):,.0f}"
        else:
            value = percent(row.get("conversion_rate", 0.0))
        parts.append(
            gettext("%(name)s: %(value)s (%(conversions)s of %(sent)s)")
            % {"name": row["name"], "value": value, "conversions": row["conversions"], "sent": row["sent"]}
        )
    metric_label = gettext("revenue per send") if metric == "revenue_per_send" else gettext("conversion rate")
    sentence = gettext(
        "%(winner)s was sent to the rest because it had the highest %(metric)s of “%(goal)s” within %(hours)s hours "
        "in the test group: %(parts)s."
    ) % {
        "winner": explanation.get("winner", ""),
        "metric": metric_label,
        "goal": explanation.get("goal_event", ""),
        "hours": explanation.get("attribution_window_hours", ""),
        "parts": "; ".join(parts),
    }
    significance = explanation.get("significance")
    if significance:
        verdict = significance.get("verdict")
        if verdict == stats.TOO_SMALL:
            sentence += " " + gettext(
                "The test group was too small to tell the variants apart with confidence (fewer than 100 sends or 5 "
                "expected conversions per variant): the choice may be chance."
            )
        elif verdict == stats.NO_DIFFERENCE:
            sentence += " " + gettext(
                "The difference from the runner-up is not statistically significant (p = %(p)s): the choice may be "
                "chance."
            ) % {"p": p_value_display(significance.get("p_value"))}
        elif verdict == stats.BETTER:
            sentence += " " + gettext("The difference from the runner-up is statistically significant (p = %(p)s).") % {
                "p": p_value_display(significance.get("p_value"))
            }
    return sentence
