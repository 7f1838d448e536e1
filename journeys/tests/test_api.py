"""The "API call" trigger: POST /api/v1/journeys/<id>/enrollments with an API key."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from crm.models import ApiKey, Source
from crm.services.apikeys import api_key_create
from crm.tests.factories import ContactFactory
from journeys.models import Enrollment, Journey, Step
from journeys.services.journeys import journey_activate

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()  # rate limits
    yield
    cache.clear()


@pytest.fixture
def key():
    return api_key_create(source=Source.objects.create(name="backend"), name="backend")[1]


@pytest.fixture
def api_journey():
    journey = Journey.objects.create(name="API", trigger=Journey.Trigger.API, reentry=Journey.Reentry.AFTER_FINISH)
    Step.objects.create(journey=journey, name="wait", kind="wait_duration", wait_minutes=60)
    return journey_activate(journey=journey)


def post(client, journey, body, key):
    return client.post(
        f"/api/v1/journeys/{journey.pk}/enrollments",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


def test_enrolls_known_contacts_with_the_trigger_data(client, key, api_journey):
    ContactFactory(external_id="a")
    ContactFactory(external_id="b")
    response = post(client, api_journey, {"external_ids": ["a", "b", "zz", "a"], "data": {"plan": "pro"}}, key)
    assert response.status_code == 201
    assert response.json() == {"entered": ["a", "b"], "not_entered": [], "unknown": ["zz"]}
    assert list(Enrollment.objects.values_list("context", flat=True)) == [{"plan": "pro"}] * 2
    again = post(client, api_journey, {"external_ids": ["a"]}, key)  # already in: the re-entry rule
    assert again.json() == {"entered": [], "not_entered": ["a"], "unknown": []}


def test_bad_input_is_a_400_with_field_errors_and_nothing_is_written(client, key, api_journey):
    response = post(client, api_journey, {"external_ids": [], "data": "x"}, key)
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"external_ids", "data"}
    assert not Enrollment.objects.exists()


def test_only_active_api_journeys_with_a_key_that_may_write(client, key, api_journey):
    ContactFactory(external_id="a")
    body = {"external_ids": ["a"]}
    assert (
        client.post(f"/api/v1/journeys/{api_journey.pk}/enrollments", body, content_type="application/json").status_code
        == 401
    )
    reader = api_key_create(source=Source.objects.get(), name="reader", scopes=[ApiKey.Scope.READ_CONTACTS])[1]
    assert post(client, api_journey, body, reader).status_code == 403
    assert post(client, Journey(pk=999), body, key).status_code == 404
    Journey.objects.filter(pk=api_journey.pk).update(status=Journey.Status.PAUSED)
    assert post(client, api_journey, body, key).status_code == 409
    assert not Enrollment.objects.exists()
