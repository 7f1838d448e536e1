"""The weekly digest of survey answers, posted to the team (the ``slack`` notifier; ``log`` when Slack is not set).

Figures (answers, average score, how many of each score) and the comments summarized: by a built-in extractive
summarizer (the comments whose words are the most frequent across all comments, in their original wording), or, when
``SUMMARY_API_URL``, ``SUMMARY_API_KEY`` and ``SUMMARY_MODEL`` name an OpenAI-compatible chat completions API, by that
model (``POST <url>/chat/completions``). The model is optional: any failure of it falls back to the built-in summary.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta

import requests
from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _

from config.logging import get_logger
from crm.models import Event
from journeys import actions
from journeys.services.surveys import SURVEY_EVENT

logger = get_logger(__name__)

WORD = re.compile(r"[\w가-힣]{2,}")
#: Words too common to say what a comment is about.
STOPWORDS = {"너무", "정말", "그리고", "그냥", "있어요", "좋아요", "the", "and", "was", "very"}


def extractive_summary(comments: list[str], *, sentences: int = 3) -> list[str]:
    """The ``sentences`` comments (split into sentences) that best represent all of them: each scored by the average
    frequency, across all comments, of its words. Deterministic; ties keep the original order."""
    parts = [p.strip() for c in comments for p in re.split(r"(?<=[.!?。])\s+|\n+", c) if p.strip()]
    frequency = Counter(w.lower() for p in parts for w in WORD.findall(p) if w.lower() not in STOPWORDS)
    if not parts:
        return []

    def score(index_part: tuple[int, str]) -> tuple[float, int]:
        index, part = index_part
        words = [w.lower() for w in WORD.findall(part) if w.lower() not in STOPWORDS]
        return (-(sum(frequency[w] for w in words) / len(words)) if words else 0.0, index)

    best = sorted(enumerate(parts), key=score)[:sentences]
    return [part for _index, part in sorted(best)]


def model_summary(comments: list[str]) -> str | None:
    """A summary by the configured OpenAI-compatible model, or None (not configured, or it failed)."""
    url, key, model = settings.LOOP_SUMMARY_API_URL, settings.LOOP_SUMMARY_API_KEY, settings.LOOP_SUMMARY_MODEL
    if not (url and key and model):
        return None
    prompt = (
        "다음은 고객 만족도 설문의 의견입니다. 팀이 알아야 할 핵심을 한국어 세 줄 이내로 요약하세요.\n\n"
        + "\n".join(f"- {c}" for c in comments)
    )
    try:
        response = requests.post(
            f"{url.rstrip('/')}/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.2},
            timeout=(5, 30),
        )
        response.raise_for_status()
        text = response.json()["choices"][0]["message"]["content"]
    except (requests.RequestException, ValueError, KeyError, IndexError, TypeError) as exc:
        logger.warning("journeys.digest_model_failed", error=type(exc).__name__)
        return None
    return text.strip() or None


def survey_digest_text(*, now: datetime | None = None, days: int = 7) -> str | None:
    """The digest of the last ``days`` days, or None when nobody answered."""
    now = now or timezone.now()
    answers = list(
        Event.objects.filter(name=SURVEY_EVENT, occurred_at__gt=now - timedelta(days=days), occurred_at__lte=now)
        .order_by("occurred_at", "id")
        .values_list("properties", flat=True)
    )
    scores = [int(a["score"]) for a in answers if isinstance(a.get("score"), int | float)]
    if not scores:
        return None
    comments = [a["comment"] for a in answers if isinstance(a.get("comment"), str) and a["comment"].strip()]
    counts = Counter(scores)
    lines = [
        _("Survey digest, last %(days)d days: %(n)d answers, average %(avg).1f / 5")
        % {"days": days, "n": len(scores), "avg": sum(scores) / len(scores)},
        " · ".join(f"{s}: {counts.get(s, 0)}" for s in range(5, 0, -1)),
    ]
    if comments:
        summary = model_summary(comments)
        lines.append(_("What customers said:"))
        lines.extend(summary.splitlines() if summary else [f"• {c}" for c in extractive_summary(comments)])
    return "\n".join(lines)


def survey_digest_post(*, now: datetime | None = None) -> str | None:
    """Post the weekly digest to the team (Slack when configured, else the log). Returns the text posted."""
    text = survey_digest_text(now=now)
    if text is None:
        return None
    actions.notify("slack" if settings.LOOP_SLACK_WEBHOOK_URL else "log", text, {"digest": "surveys"})
    return text
