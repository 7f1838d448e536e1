"""The admin of sender profiles and KakaoTalk templates, and the campaign form's channel rules: SMS length
(with the advertising notice) and the AlimTalk template's exact text, shown on the fields when saving."""

from __future__ import annotations

import pytest
import responses
from django.test import override_settings
from django.urls import reverse

from campaigns.models import Campaign, KakaoTemplate, SenderProfile
from campaigns.tests.factories import KakaoTemplateFactory, SegmentFactory, SenderProfileFactory
from campaigns.tests.test_admin import campaign_form
from campaigns.tests.test_sms_backends import SOLAPI

pytestmark = pytest.mark.django_db


def profile_form(**overrides) -> dict:
    return {"kind": "sms", "label": "대표번호", "value": "1588-0001", "sender_key": "", "is_default": "on"} | overrides


def test_sms_profile_number_is_validated_and_stored_in_e164(admin_client):
    url = reverse("admin:campaigns_senderprofile_add")
    response = admin_client.post(url, profile_form(value="080-123-4567"))
    assert response.status_code == 200
    assert "발신번호로 쓸 수 없습니다" in str(response.context["adminform"].form.errors["value"])
    response = admin_client.post(url, profile_form(value="12345"))
    assert response.context["adminform"].form.errors["value"]
    response = admin_client.post(url, profile_form(value="02-1234-5678"))
    assert response.status_code == 302
    assert SenderProfile.objects.get().value == "+82212345678"


@SOLAPI
@override_settings(LOOP_CHANNEL_BACKENDS={"sms": "solapi"})
@responses.activate
def test_sms_profile_must_be_registered_with_solapi(admin_client):
    responses.get("https://api.solapi.com/senderid/v1/numbers/active", json=["0212345678", "15880001"])
    url = reverse("admin:campaigns_senderprofile_add")
    response = admin_client.post(url, profile_form(value="031-123-4567"))
    errors = str(response.context["adminform"].form.errors["value"])
    assert "0311234567 번호는 솔라피 계정에 등록된 활성 발신번호가 아닙니다" in errors
    assert admin_client.post(url, profile_form(value="1588-0001")).status_code == 302
    assert responses.calls[0].request.headers["Authorization"].startswith("HMAC-SHA256 apiKey=NCSAYU7YDBXYORXC, ")


def test_a_new_default_profile_replaces_the_old_one(admin_client):
    old = SenderProfileFactory(value="+8215880001")
    response = admin_client.post(reverse("admin:campaigns_senderprofile_add"), profile_form(value="02-1234-5678"))
    assert response.status_code == 302
    old.refresh_from_db()
    assert not old.is_default
    assert SenderProfile.objects.get(is_default=True).value == "+82212345678"


def test_kakao_profile_needs_its_sender_key_and_search_id(admin_client):
    url = reverse("admin:campaigns_senderprofile_add")
    response = admin_client.post(url, profile_form(kind="kakao", value="loopshop"))
    errors = response.context["adminform"].form.errors
    assert "value" in errors
    assert "sender_key" in errors
    response = admin_client.post(url, profile_form(kind="kakao", value="@loopshop", sender_key="KA01PF24112400"))
    assert response.status_code == 302


def test_kakao_template_buttons_are_validated_and_variables_listed(admin_client):
    profile = SenderProfileFactory(kind="kakao", value="@loopshop")
    url = reverse("admin:campaigns_kakaotemplate_add")
    data = {
        "sender_profile": profile.pk,
        "code": "KA01TP0001",
        "name": "배송 출발",
        "text": "#{고객명}님, 주문하신 상품이 출발했어요.",
        "buttons": '[{"type": "WL", "name": "배송 조회"}]',
        "active": "on",
    }
    response = admin_client.post(url, data)
    assert "url_mobile" in str(response.context["adminform"].form.errors["buttons"])
    data["buttons"] = '[{"type": "WL", "name": "배송 조회", "url_mobile": "https://shop.example/track"}]'
    assert admin_client.post(url, data).status_code == 302
    template = KakaoTemplate.objects.get()
    page = admin_client.get(reverse("admin:campaigns_kakaotemplate_change", args=[template.pk])).content.decode()
    assert "#{고객명}" in page


def sms_campaign_form(**overrides) -> dict:
    data = campaign_form(SegmentFactory(), channel="sms", purpose="informational", **overrides)
    data.update({"variants-TOTAL_FORMS": 1, "variants-0-subject": "", "sender_profile": "", "sms_fallback": "on"})
    return data


def test_sms_text_over_2000_bytes_is_a_field_error(admin_client):
    SenderProfileFactory(value="+8215880001")
    data = sms_campaign_form()
    data["variants-0-body"] = "가" * 1001
    response = admin_client.post(reverse("admin:campaigns_campaign_add"), data)
    assert response.status_code == 200
    formset = response.context["inline_admin_formsets"][0]
    assert "2,002" in str(formset.formset.forms[0].errors["body"])
    assert not Campaign.objects.exists()
    data["variants-0-body"] = "가" * 1000
    assert admin_client.post(reverse("admin:campaigns_campaign_add"), data).status_code == 302


def test_sms_campaign_needs_a_caller_number(admin_client):
    response = admin_client.post(reverse("admin:campaigns_campaign_add"), sms_campaign_form())
    assert "sender_profile" in response.context["adminform"].form.errors


def test_alimtalk_rules_in_the_campaign_form(admin_client):
    template = KakaoTemplateFactory()
    data = campaign_form(SegmentFactory(), channel="kakao", purpose="advertising")
    data.update(
        {
            "variants-TOTAL_FORMS": 1,
            "kakao_type": "alimtalk",
            "kakao_template": template.pk,
            "sender_profile": template.sender_profile.pk,
            "variants-0-subject": "",
            "variants-0-body": "#{고객명}님, 상품이 출발했어요.",
        }
    )
    response = admin_client.post(reverse("admin:campaigns_campaign_add"), data)
    form_errors = response.context["adminform"].form.errors
    assert "알림톡은 정보성 메시지 전용입니다" in str(form_errors["purpose"])
    formset = response.context["inline_admin_formsets"][0]
    assert "#{쿠폰 코드}" in str(formset.formset.forms[0].errors["body"])
    data["purpose"] = "informational"
    data["variants-0-body"] = template.text
    response = admin_client.post(reverse("admin:campaigns_campaign_add"), data)
    assert response.status_code == 302
    assert Campaign.objects.get().kakao_template == template


def test_the_counter_script_is_on_the_campaign_page(admin_client):
    page = admin_client.get(reverse("admin:campaigns_campaign_add")).content.decode()
    assert "campaigns/sms_counter.js" in page
    assert 'data-sms-counter="1"' in page
    assert 'data-sms-optout="080-000-0000"' in page


def test_sender_profile_changes_are_audited(admin_client):
    from crm.models import AuditEntry

    admin_client.post(reverse("admin:campaigns_senderprofile_add"), profile_form(value="02-1234-5678"))
    entry = AuditEntry.objects.get(object_type="campaigns.senderprofile")
    assert entry.action == AuditEntry.Action.CREATED
    assert entry.changes["value"] == [None, "+82212345678"]
    assert entry.actor.username == "admin"
