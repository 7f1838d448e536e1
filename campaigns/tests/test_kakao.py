"""KakaoTalk: AlimTalk templates (exact text, variables per contact, refused for advertising), FriendTalk (adFlag,
link button, never 20:00–08:00), the requests to Solapi, and the SMS fallback when Kakao cannot reach the person."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import responses
from django.core.exceptions import ValidationError
from django.test import override_settings

from campaigns.channels.kakao import alimtalk_variables, button_errors, template_mismatch
from campaigns.content_rules import campaign_channel_errors, variant_errors
from campaigns.models import Campaign, KakaoType, Send
from campaigns.services.campaigns import campaign_schedule
from campaigns.services.sending import sends_process
from campaigns.tests.factories import (
    CampaignFactory,
    KakaoTemplateFactory,
    SenderProfileFactory,
    SendFactory,
    VariantFactory,
)
from campaigns.tests.test_sms_backends import SEND_URL, SOLAPI, accepted, group, refused
from crm.tests.factories import ConsentFactory, ContactFactory

pytestmark = pytest.mark.django_db
SEOUL = ZoneInfo("Asia/Seoul")
TEMPLATE = "#{고객명}님, 주문하신 상품이 출발했어요. 쿠폰 #{쿠폰 코드}도 확인하세요."


@pytest.fixture(autouse=True)
def _links_as_written(settings):
    """These tests check the provider request with the buttons' own URLs; click tracking (which rewrites them to
    /t/c/…) is covered in test_tracking.py."""
    settings.LOOP_TRACK_CLICKS = False


# --- Templates -----------------------------------------------------------------------------------------------------


def test_template_text_must_match_exactly():
    assert template_mismatch(TEMPLATE, TEMPLATE) == []
    # our fallbacks and formats on the same variables are fine
    assert (
        template_mismatch(
            TEMPLATE, "#{고객명|고객}님, 주문하신 상품이 출발했어요. 쿠폰 #{쿠폰 코드|없음}도 확인하세요."
        )
        == []
    )
    [missing] = template_mismatch(TEMPLATE, "#{고객명}님, 주문하신 상품이 출발했어요. 쿠폰도 확인하세요.")
    assert "#{쿠폰 코드}" in missing
    [unknown] = template_mismatch(TEMPLATE, TEMPLATE + " #{할인 금액}")
    assert "#{할인 금액}" in unknown
    [changed] = template_mismatch(TEMPLATE, TEMPLATE.replace("출발했어요", "출발했습니다"))
    assert "exactly" in changed or "정확히" in changed
    # variables in another order are another text
    assert template_mismatch("#{a} #{b}", "#{b} #{a}")


def test_alimtalk_variables_are_rendered_per_contact():
    data = {"contact": {"name": "김민지"}, "coupon": {}}
    body = "#{고객명|고객}님, 주문하신 상품이 출발했어요. 쿠폰 #{쿠폰 코드|없음}도 확인하세요."
    assert alimtalk_variables(body, data) == {"#{고객명}": "김민지", "#{쿠폰 코드}": "없음"}


def test_button_validation():
    assert button_errors([{"type": "WL", "name": "보기", "url_mobile": "https://shop.example"}]) == []
    assert button_errors([{"type": "AL", "name": "앱", "scheme_android": "loop://a", "scheme_ios": "loop://i"}]) == []
    assert len(button_errors([{"type": "WL", "name": "", "url_mobile": "ftp://x"}])) == 2
    assert button_errors([{"type": "XX"}])
    assert button_errors({"type": "WL"})


def test_channel_rules():
    template = KakaoTemplateFactory()
    profile = template.sender_profile
    alimtalk_ad = Campaign(
        channel="kakao", purpose="advertising", kakao_type=KakaoType.ALIMTALK, kakao_template=template
    )
    assert "purpose" in campaign_channel_errors(alimtalk_ad)
    assert "kakao_template" in campaign_channel_errors(Campaign(channel="kakao", kakao_type=KakaoType.ALIMTALK))
    friendtalk = Campaign(channel="kakao", kakao_type=KakaoType.FRIENDTALK, kakao_template=template)
    assert "kakao_template" in campaign_channel_errors(friendtalk)
    assert "kakao_type" in campaign_channel_errors(Campaign(channel="email", kakao_type=KakaoType.FRIENDTALK))
    ok = Campaign(channel="kakao", kakao_type=KakaoType.ALIMTALK, kakao_template=template, sender_profile=profile)
    assert campaign_channel_errors(ok) == {}
    # SMS without any caller number
    assert "sender_profile" in campaign_channel_errors(Campaign(channel="sms"))
    assert "sender_profile" in campaign_channel_errors(Campaign(channel="sms", sender_profile=profile))


def test_scheduling_refuses_a_variant_that_is_not_the_template():
    template = KakaoTemplateFactory()
    campaign = CampaignFactory(channel="kakao", kakao_type=KakaoType.ALIMTALK, kakao_template=template, variants=0)
    VariantFactory(campaign=campaign, name="A", body="#{고객명}님, 상품이 출발했어요.")
    with pytest.raises(ValidationError) as error:
        campaign_schedule(campaign=campaign)
    assert "#{쿠폰 코드}" in str(error.value)
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.DRAFT


def test_sms_variant_length_includes_the_advertising_notice():
    SenderProfileFactory()
    info = Campaign(channel="sms", purpose="informational")
    ad = Campaign(channel="sms", purpose="advertising")
    body = "가" * 990  # 1,980 bytes
    assert variant_errors(info, {"body": body}) == {}
    assert "body" in variant_errors(ad, {"body": body})  # + (광고)Loop Shop … 무료수신거부 080-000-0000
    assert "body" in variant_errors(info, {"body": "가" * 1001})


# --- Sending -------------------------------------------------------------------------------------------------------


def kakao_campaign(kakao_type: str, **fields) -> Campaign:
    template = KakaoTemplateFactory() if kakao_type == KakaoType.ALIMTALK else None
    profile = template.sender_profile if template else SenderProfileFactory(kind="kakao", value="@loopshop")
    campaign = CampaignFactory(
        channel="kakao",
        kakao_type=kakao_type,
        kakao_template=template,
        sender_profile=profile,
        variants=0,
        **fields,
    )
    body = fields.pop("body", None) or (
        "#{고객명|고객}님, 주문하신 상품이 출발했어요. 쿠폰 #{쿠폰 코드|없음}도 확인하세요."
        if template
        else "주말 특가! #{고객명|고객}님만을 위한 쿠폰"
    )
    VariantFactory(
        campaign=campaign, name="A", subject="", body=body, link_url="" if template else "https://shop.example/sale"
    )
    return campaign


def kakao_send(campaign: Campaign, *purposes: str) -> Send:
    contact = ContactFactory(name="김민지", phone="+821012345678")
    for purpose in ("kakao", *purposes):
        ConsentFactory(contact=contact, purpose=purpose)
    return SendFactory(
        campaign=campaign,
        contact=contact,
        channel="kakao",
        variant=campaign.variants.get(),
        advertising=campaign.is_advertising,
        due_at=datetime(2026, 11, 24, 0, 0, tzinfo=SEOUL),
    )


KAKAO = override_settings(LOOP_CHANNEL_BACKENDS={"kakao": "solapi_kakao", "sms": "solapi"})


@SOLAPI
@KAKAO
@responses.activate
def test_alimtalk_request_has_template_variables_and_buttons():
    send = kakao_send(kakao_campaign(KakaoType.ALIMTALK))
    responses.post(SEND_URL, json=group([accepted(send.pk, "01012345678", "M4VATA0001", "ATA")], []))
    sends_process(send_ids=[send.pk], now=datetime(2026, 11, 24, 21, 0, tzinfo=SEOUL))  # informational: any hour
    [payload] = json.loads(responses.calls[0].request.body)["messages"]
    assert payload["type"] == "ATA"
    assert payload["to"] == "01012345678"
    assert payload["text"] == "김민지님, 주문하신 상품이 출발했어요. 쿠폰 없음도 확인하세요."
    options = payload["kakaoOptions"]
    assert options["pfId"] == "KA01PF2411240000000000000000000"
    assert options["templateId"] == send.campaign.kakao_template.code
    assert options["variables"] == {"#{고객명}": "김민지", "#{쿠폰 코드}": "없음"}
    assert options["disableSms"] is True
    assert options["buttons"] == [
        {"buttonType": "WL", "buttonName": "배송 조회", "linkMo": "https://shop.example/track"}
    ]
    send.refresh_from_db()
    assert send.status == Send.Status.SENT
    assert send.provider_message_id == "M4VATA0001"


@SOLAPI
@KAKAO
@responses.activate
def test_friendtalk_advertising_request():
    send = kakao_send(kakao_campaign(KakaoType.FRIENDTALK, purpose="advertising"), "ads")
    responses.post(SEND_URL, json=group([accepted(send.pk, "01012345678", "M4VCTA0001", "CTA")], []))
    sends_process(send_ids=[send.pk], now=datetime(2026, 11, 24, 12, 0, tzinfo=SEOUL))
    [payload] = json.loads(responses.calls[0].request.body)["messages"]
    assert payload["type"] == "CTA"
    assert payload["text"].startswith("(광고)Loop Shop\n주말 특가! 김민지님만을 위한 쿠폰")
    assert payload["text"].endswith("무료수신거부 080-000-0000")
    assert payload["kakaoOptions"]["adFlag"] is True
    assert "templateId" not in payload["kakaoOptions"]
    assert payload["kakaoOptions"]["buttons"] == [
        {"buttonType": "WL", "buttonName": "자세히 보기", "linkMo": "https://shop.example/sale"}
    ]


@SOLAPI
@KAKAO
@responses.activate
def test_friendtalk_is_held_from_20_00_even_with_night_consent():
    friendtalk = kakao_send(kakao_campaign(KakaoType.FRIENDTALK, purpose="advertising"), "ads", "ads_night")
    informational = kakao_send(kakao_campaign(KakaoType.FRIENDTALK))
    sends_process(send_ids=[friendtalk.pk, informational.pk], now=datetime(2026, 11, 24, 20, 30, tzinfo=SEOUL))
    for send in (friendtalk, informational):
        send.refresh_from_db()
        assert send.status == Send.Status.HELD
        assert send.due_at == datetime(2026, 11, 25, 8, 0, tzinfo=SEOUL)
    assert len(responses.calls) == 0


@SOLAPI
@KAKAO
@responses.activate
def test_not_a_friend_falls_back_to_sms_with_the_same_text():
    SenderProfileFactory(value="+8215880001")
    campaign = kakao_campaign(KakaoType.FRIENDTALK, purpose="advertising")
    with_sms = kakao_send(campaign, "ads", "sms")
    without_sms = kakao_send(campaign, "ads")
    calls = []

    def answer(request):
        messages = json.loads(request.body)["messages"]
        calls.append(messages)
        if messages[0]["type"] == "CTA":
            rows = [refused(int(m["customFields"]["sendId"]), m["to"], "3105", "친구톡: 친구가 아님") for m in messages]
            return 200, {}, json.dumps(group([], rows))
        rows = [accepted(int(m["customFields"]["sendId"]), m["to"], "M4VLMS0001", "LMS") for m in messages]
        return 200, {}, json.dumps(group(rows, []))

    responses.add_callback(responses.POST, SEND_URL, callback=answer)
    sends_process(send_ids=[with_sms.pk, without_sms.pk], now=datetime(2026, 11, 24, 12, 0, tzinfo=SEOUL))

    kakao_request, sms_request = calls
    assert len(kakao_request) == 2
    [fallback] = sms_request
    assert fallback["customFields"] == {"sendId": str(with_sms.pk)}
    assert fallback["from"] == "15880001"
    assert fallback["type"] == "LMS"
    assert fallback["text"] == kakao_request[0]["text"] + "\nhttps://shop.example/sale"
    with_sms.refresh_from_db()
    without_sms.refresh_from_db()
    assert with_sms.status == Send.Status.SENT
    assert with_sms.fallback_channel == "sms"
    assert "3105" in with_sms.fallback_reason
    assert with_sms.fallback_provider_message_id == "M4VLMS0001"
    assert without_sms.status == Send.Status.FAILED
    assert "no SMS consent" in without_sms.error
    assert without_sms.fallback_channel == ""


@SOLAPI
@KAKAO
@responses.activate
def test_alimtalk_refuses_advertising_at_the_backend_too():
    from campaigns.channels import Message
    from campaigns.channels.kakao import SolapiKakaoBackend

    contact = ContactFactory()
    message = Message(
        send_id=1,
        channel="kakao",
        contact_id=contact.pk,
        to="+821012345678",
        body="(광고) …",
        advertising=True,
        extra={
            "sender": {"kind": "kakao", "value": "@loopshop", "sender_key": "KA01PF"},
            "kakao": {"type": "alimtalk", "template_code": "T1", "variables": {}},
        },
    )
    [result] = SolapiKakaoBackend().send_batch([message])
    assert not result.ok
    assert not result.transient
    assert "advertising" in result.error
    assert len(responses.calls) == 0
