"""Issue #11: no admin page makes a query per row (N+1). Generic over ``admin.site._registry``.

Every registered model gets N rows, then N more; each changelist and change page is loaded at N and at 2N rows and
must send the same number of queries. A model this test cannot fill fails the test (nothing is skipped silently).
"""

from __future__ import annotations

from datetime import timedelta
from itertools import count

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)

from campaigns.models import (
    AdsConsentNotice,
    Click,
    Conversion,
    Destination,
    KakaoTemplate,
    LaunchApproval,
    Notification,
    Open,
    OutboxMessage,
    Run,
    SenderProfile,
)
from campaigns.tests.factories import CampaignFactory, SegmentFactory, SendFactory, SuppressionFactory
from crm.audit import audit_record
from crm.models import AuditEntry, ContactImport, Heartbeat, RejectedMessage, Source, UnprocessedEvent
from crm.services.apikeys import api_key_create
from crm.tests.factories import (
    CartFactory,
    ConsentChangeFactory,
    ContactFactory,
    ContactListFactory,
    CouponFactory,
    DeviceFactory,
    EventFactory,
    OrderFactory,
    TagFactory,
    WishlistItemFactory,
)
from journeys.models import Enrollment, Journey, LeadForm

pytestmark = pytest.mark.django_db
N = 3
_seq = count(1)


def add_rows(n: int, admin_user) -> None:
    """``n`` more rows of every registered model, each with its related rows (the columns a list shows)."""
    now = timezone.now()
    for _ in range(n):
        i = next(_seq)
        source = Source.objects.create(name=f"shop-{i}")
        api_key_create(source=source, name=f"key {i}")
        contact = ContactFactory()
        contact.tags.add(TagFactory())
        contact.lists.add(ContactListFactory())
        event = EventFactory(contact=contact, source=source)
        UnprocessedEvent.objects.create(event_id=event.pk)
        CouponFactory(contact=contact)
        OrderFactory(contact=contact)
        CartFactory(contact=contact)
        WishlistItemFactory(contact=contact)
        DeviceFactory(contact=contact)
        ConsentChangeFactory(contact=contact)
        segment = SegmentFactory()
        campaign = CampaignFactory(segment=segment, created_by=admin_user)
        Run.objects.create(campaign=campaign, scheduled_for=now + timedelta(minutes=i))
        send = SendFactory(campaign=campaign, contact=contact)
        OutboxMessage.objects.create(send=send, channel="email", to=f"c{i}@example.com", subject="s", body="b")
        SuppressionFactory(contact=contact)
        AdsConsentNotice.objects.create(
            contact=contact, consented_at=now, anniversary=now + timedelta(days=i), channel="email", send=send
        )
        Click.objects.create(send=send, url=f"https://shop.example/{i}")
        Open.objects.create(send=send)
        Conversion.objects.create(
            event=event, send=send, campaign=campaign, contact=contact, occurred_at=now, touched_at=now
        )
        profile = SenderProfile.objects.create(kind="kakao", label=f"채널 {i}", value=f"@loop{i}", sender_key=f"pf{i}")
        KakaoTemplate.objects.create(sender_profile=profile, code=f"T{i}", name=f"템플릿 {i}", text="#{고객명}님")
        destination = Destination.objects.create(name=f"team-{i}", kind="slack", url="https://hooks.slack.com/x")
        Notification.objects.create(destination=destination, channel="slack", text=f"note {i}")
        LaunchApproval.objects.create(
            campaign=campaign, action=LaunchApproval.Action.choices[0][0], audience_size=10, requested_by=admin_user
        )
        journey = Journey.objects.create(name=f"journey {i}")
        Enrollment.objects.create(journey=journey, contact=contact)
        LeadForm.objects.create(name=f"form {i}", slug=f"form-{i}", journey=journey)
        audit_record(action=AuditEntry.Action.OTHER, instance=campaign, user=admin_user)
        RejectedMessage.objects.create(source=source, endpoint="track", payload={"i": i}, errors={"x": ["bad"]})
        Heartbeat.objects.create(name=f"beat-{i}", beat_at=now)
        ContactImport.objects.create(file_name=f"f{i}.csv", created_by=admin_user)
        User.objects.create_user(username=f"user-{i}", is_staff=True).groups.add(Group.objects.create(name=f"g{i}"))
        interval = IntervalSchedule.objects.create(every=i, period=IntervalSchedule.SECONDS)
        CrontabSchedule.objects.create(minute=str(i % 60))
        ClockedSchedule.objects.create(clocked_time=now + timedelta(days=i))
        SolarSchedule.objects.create(event="sunrise", latitude=37.5 + i / 100, longitude=127)
        PeriodicTask.objects.create(name=f"task {i}", task="crm.record_heartbeat", interval=interval)


def admin_pages() -> list[tuple[str, object]]:
    return sorted(((model._meta.label_lower, model) for model in admin.site._registry), key=lambda item: item[0])


def page_queries(client, model) -> dict[str, int]:
    """Queries of the changelist and of the newest row's change page (when the admin has them)."""
    opts = model._meta
    found = {}
    try:
        urls = {"list": reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")}
    except NoReverseMatch:
        return found
    pk = model._default_manager.order_by("-pk").values_list("pk", flat=True).first()
    if pk is not None:
        urls["change"] = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk])
    for kind, url in urls.items():
        client.get(url)  # warm-up: caches (content types, the session's first touch) are not what is measured
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url)
        assert response.status_code in (200, 302), (url, response.status_code)
        found[kind] = len(captured)
    return found


def test_every_changelist_and_change_page_has_a_constant_number_of_queries(admin_client, admin_user):
    add_rows(N, admin_user)
    rows_before = {label: model._default_manager.count() for label, model in admin_pages()}
    before = {label: page_queries(admin_client, model) for label, model in admin_pages()}

    add_rows(N, admin_user)
    rows_after = {label: model._default_manager.count() for label, model in admin_pages()}
    after = {label: page_queries(admin_client, model) for label, model in admin_pages()}

    # the test filled every model with rows (a page with no rows cannot show an N+1)
    models_with_lists = {label for label, pages in before.items() if pages}
    not_filled = {label for label in models_with_lists if not rows_after[label] > rows_before[label] >= 1}
    assert not_filled == set(), f"add_rows() does not create rows of {sorted(not_filled)}"
    assert models_with_lists, "no changelist measured"
    grew = {label: (before[label], after[label]) for label in models_with_lists if before[label] != after[label]}
    assert grew == {}, f"queries grew with the rows (N+1): {grew}"


def test_rows_of_a_contact_are_found_by_the_contacts_name_email_phone_or_id_and_by_their_own_exact_code(
    admin_client,
):
    minji = ContactFactory(name="김민지", email="minji@example.com", phone="+821012345678", external_id="u-77")
    other = ContactFactory(name="박서준", email="seojun@example.com")
    mine = CouponFactory(contact=minji, code="WELCOME10")
    theirs = CouponFactory(contact=other, code="VIP2026")
    url = reverse("admin:crm_coupon_changelist")

    def found(term):
        return {coupon.pk for coupon in admin_client.get(url, {"q": term}).context["cl"].result_list}

    for term in ("민지", "MINJI@example", "010-1234-5678", "u-77", "WELCOME10"):
        assert found(term) == {mine.pk}, term
    assert found("VIP2026") == {theirs.pk}
    assert found("WELCOME") == set()  # a code is matched whole (its index answers it)
    assert found("u-7") == set()  # so is an external ID


def contact_selects(model, model_admin, request) -> list[str]:
    """The editable foreign keys to contacts of ``model_admin``'s form that would render every contact."""
    from crm.models import Contact

    editable = set(model_admin.get_fields(request)) - set(model_admin.get_readonly_fields(request))
    return [
        f"{model._meta.label_lower}.{field.name}"
        for field in model._meta.get_fields()
        if field.is_relation
        and field.concrete
        and field.related_model is Contact
        and field.name in editable
        and field.name not in (*model_admin.raw_id_fields, *model_admin.autocomplete_fields)
    ]


def test_no_form_renders_a_select_of_every_contact(rf, admin_user):
    """A foreign key to contacts (a million rows) is never a <select> of all of them: raw ID, autocomplete or
    read-only, on every registered admin's change form."""
    from crm.models import Device

    request = rf.get("/")
    request.user = admin_user
    offenders = [
        name
        for model, model_admin in admin.site._registry.items()
        for name in contact_selects(model, model_admin, request)
    ]
    assert offenders == []

    class CarelessDeviceAdmin(admin.ModelAdmin):  # the check itself finds an editable contact select
        fields = ["contact", "platform", "token"]

    assert contact_selects(Device, CarelessDeviceAdmin(Device, admin.site), request) == ["crm.device.contact"]
