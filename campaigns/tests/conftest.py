"""Fixtures of the campaigns tests: Celery tasks run eagerly (in the test process, on commit)."""

from __future__ import annotations

import pytest

from config.celery import app as celery_app


@pytest.fixture(autouse=True)
def eager_celery():
    """Tasks sent with .delay() run at once in this process (the on_commit hooks still decide *when*)."""
    previous = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = previous


@pytest.fixture
def consenting():
    """``consenting(contact, "email", "ads")``: grant those purposes to the contact."""
    from crm.tests.factories import ConsentFactory

    def grant(contact, *purposes):
        for purpose in purposes:
            ConsentFactory(contact=contact, purpose=purpose)
        return contact

    return grant
