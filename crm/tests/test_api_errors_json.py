"""Every API error is JSON, even for a URL that matches no endpoint (a path parameter of the wrong type)."""

import pytest

pytestmark = pytest.mark.django_db


def test_an_unknown_api_url_answers_json_404(client):
    response = client.post("/api/v1/journeys/null,null/enrollments", {}, content_type="application/json")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "not_found"


def test_pages_keep_the_html_404(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
