"""The weekly survey digest: figures, the extractive summary, the optional OpenAI-compatible model, Slack."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import responses
from django.conf import settings
from django.test import override_settings
from django.utils import translation

from crm.tests.factories import EventFactory
from journeys.services.digest import extractive_summary, survey_digest_post, survey_digest_text
from journeys.tests.conftest import T0

pytestmark = pytest.mark.django_db
SLACK = "https://hooks.slack.com/services/T0/B0/digest"
MODEL = {"LOOP_SUMMARY_API_URL": "https://llm.example.com/v1", "LOOP_SUMMARY_API_KEY": "k", "LOOP_SUMMARY_MODEL": "m"}


def answers():
    for days, score, comment in [
        (1, 5, "배송이 빨라서 좋았어요."),
        (2, 2, "배송이 늦었어요. 포장은 괜찮았어요."),
        (3, 4, "배송 빠르고 상담원이 친절했어요."),
        (4, 1, ""),
        (10, 5, "지난주 의견: 포함되면 안 돼요."),
    ]:
        EventFactory(
            name="Survey Answered",
            occurred_at=T0 - timedelta(days=days),
            properties={"score": score, "comment": comment},
        )


def test_extractive_summary_keeps_the_most_representative_sentences_in_order():
    comments = ["배송이 빨라서 좋았어요.", "가격이 비싸요.", "배송 빠르고 친절해요. 배송 최고!"]
    # "배송" is the most frequent word: the sentences richest in frequent words win, shown in their original order.
    assert extractive_summary(comments, sentences=2) == ["배송 빠르고 친절해요.", "배송 최고!"]
    assert extractive_summary([]) == []


@responses.activate
@override_settings(LOOP_SLACK_WEBHOOK_URL=SLACK)
def test_weekly_digest_posts_figures_and_the_built_in_summary_to_slack():
    responses.post(SLACK, body="ok")
    answers()
    with translation.override("en"):
        text = survey_digest_post(now=T0)
    lines = text.splitlines()
    assert lines[0] == "Survey digest, last 7 days: 4 answers, average 3.0 / 5"
    assert lines[1] == "5: 1 · 4: 1 · 3: 0 · 2: 1 · 1: 1"
    assert "지난주" not in text
    assert any(line.startswith("• ") and "배송" in line for line in lines)
    assert json.loads(responses.calls[0].request.body) == {"text": text}


@responses.activate
@override_settings(**MODEL)
def test_the_configured_model_summarizes_and_a_failing_one_falls_back():
    answers()
    responses.post(
        "https://llm.example.com/v1/chat/completions",
        json={"choices": [{"message": {"role": "assistant", "content": "배송 속도 호평, 지연 1건."}}]},
    )
    text = survey_digest_text(now=T0)
    assert text.splitlines()[-1] == "배송 속도 호평, 지연 1건."
    request = json.loads(responses.calls[0].request.body)
    assert request["model"] == "m"
    assert "배송이 늦었어요" in request["messages"][0]["content"]
    assert responses.calls[0].request.headers["Authorization"] == "Bearer k"
    responses.replace(responses.POST, "https://llm.example.com/v1/chat/completions", status=500)
    assert any(line.startswith("• ") for line in survey_digest_text(now=T0).splitlines())


def test_no_answers_no_digest_and_the_beat_entry():
    assert survey_digest_text(now=T0) is None
    assert settings.CELERY_BEAT_SCHEDULE["journeys-survey-digest"]["task"] == "journeys.survey_digest"
