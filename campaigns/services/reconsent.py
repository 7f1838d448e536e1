"""The advertising-consent notice (정보통신망법 제50조 ⑧, 시행령 제62조의3): every 2 years from the day a contact
consented to advertising, the sender must tell them that they consented (when, to whom) and how to keep or withdraw
it. Run daily by beat (``campaigns.ads_reconsent_notify``).

Set-based, in batches of contacts (one transaction each): one query finds the contacts whose period ended
(advertising consent granted, and the later of the consent and the last notice's period end is at least
``ADS_RECONSENT_DAYS`` ago) and who can be reached (email address and email consent, or phone and SMS consent;
the others are only counted, so they never fill a batch); one insert creates their sends of the built-in notice
campaign (email when possible, otherwise SMS), each keyed ``ads-reconsent:<contact>:<period>``; one insert records
a notice per contact and period (``UniqueConstraint(contact, anniversary)``): never twice for a period, whatever
runs concurrently. Chunk tasks deliver the sends through the pipeline after the commit. A contact who consents
again starts a new period from that day. The notice is informational: it needs the channel's consent, is exempt
from the frequency cap and not held by quiet hours.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import formats, timezone, translation
from django.utils.translation import gettext as _

from campaigns.advertising import UNSUBSCRIBE_URL
from campaigns.models import AdsConsentNotice, Campaign, Purpose, Send, Variant
from campaigns.services.sending import sends_enqueue
from crm.models import Consent, Contact

log = structlog.get_logger(__name__)

CHANNELS = {"email": Campaign.Builtin.ADS_RECONSENT_EMAIL, "sms": Campaign.Builtin.ADS_RECONSENT_SMS}


def notice_content(channel: str) -> dict[str, str]:
    """The built-in notice's wording, in the workspace language (editable afterwards like any campaign)."""
    with translation.override(settings.LANGUAGE_CODE):
        body = _(
            "Hello #{name|customer}. You consented to receive advertising from #{event.sender} on "
            "#{event.consented_on}. As required by law, we remind you of this consent every two years. To keep "
            "receiving our news you need to do nothing."
        )
        if channel == "email":
            opt_out = _("To stop receiving advertising, unsubscribe here: %(url)s") % {"url": UNSUBSCRIBE_URL}
        else:
            opt_out = _("To stop receiving advertising, call for free: #{event.opt_out_phone}")
        return {
            "subject": _("[#{event.sender}] Your consent to receive advertising"),
            "preheader": _("A reminder sent every two years"),
            "body": f"{body}\n\n{opt_out}",
        }


def builtin_notice_campaign(channel: str) -> Campaign:
    """The built-in notice campaign of ``channel``, created with its wording the first time."""
    builtin = CHANNELS[channel]
    campaign = Campaign.objects.filter(builtin=builtin).first()
    if campaign is not None:
        return campaign
    with transaction.atomic():
        campaign, created = Campaign.objects.get_or_create(
            builtin=builtin,
            defaults={
                "name": str(Campaign.Builtin(builtin).label),
                "kind": Campaign.Kind.TRIGGERED,
                "channel": channel,
                "purpose": Purpose.INFORMATIONAL,
                "frequency_cap_exempt": True,
                "status": Campaign.Status.RUNNING,
            },
        )
        if created:
            Variant.objects.create(campaign=campaign, name="A", **notice_content(channel))
    return campaign


def _anniversary(last: datetime, *, now: datetime, period: timedelta) -> datetime:
    """The latest end of a period that started at ``last`` and is not after ``now``."""
    return last + period * ((now - last) // period)


def _due(*, now: datetime, period: timedelta):
    """Advertising consents whose period ended: the later of the consent and the last notice's period end is at
    least ``period`` before ``now``."""
    cutoff = now - period
    last_notice = (
        AdsConsentNotice.objects.filter(contact_id=OuterRef("contact_id"), anniversary__gt=OuterRef("changed_at"))
        .order_by("-anniversary")
        .values("anniversary")[:1]
    )
    return (
        Consent.objects.filter(purpose="ads", granted=True, changed_at__lte=cutoff, contact__erased_at=None)
        .annotate(last=Coalesce(Subquery(last_notice), F("changed_at")))
        .filter(last__lte=cutoff)
    )


def _reachable() -> Q:
    """The contact can get the notice: an email address with email consent, or a phone number with SMS consent."""

    def consented(purpose: str) -> Exists:
        return Exists(Consent.objects.filter(contact_id=OuterRef("contact_id"), purpose=purpose, granted=True))

    return (Q(contact__email__gt="") & Q(consented("email"))) | (Q(contact__phone__gt="") & Q(consented("sms")))


def ads_reconsent_notify(*, now: datetime | None = None, batch_size: int = 5_000) -> dict[str, int]:
    """Send every due notice, ``batch_size`` contacts per transaction; returns how many per channel, and how many
    due contacts can be reached on neither channel (left for when they can)."""
    now = now or timezone.now()
    period = timedelta(days=settings.LOOP_ADS_RECONSENT_DAYS)
    result = {"email": 0, "sms": 0, "unreachable": _due(now=now, period=period).exclude(_reachable()).count()}
    after = 0
    while True:
        due = list(
            _due(now=now, period=period)
            .filter(_reachable(), contact_id__gt=after)
            .order_by("contact_id")
            .values_list("contact_id", "changed_at", "last")[:batch_size]
        )
        if not due:
            break
        for channel, count in _notify(due, now=now, period=period).items():
            result[channel] += count
        after = due[-1][0]
        if len(due) < batch_size:
            break
    log.info("ads_reconsent_notified", **result)
    return result


def _notify(due: list[tuple[int, datetime, datetime]], *, now: datetime, period: timedelta) -> dict[str, int]:
    result = {"email": 0, "sms": 0}
    ids = [contact_id for contact_id, _c, _l in due]
    granted = set(
        Consent.objects.filter(contact_id__in=ids, purpose__in=CHANNELS, granted=True).values_list(
            "contact_id", "purpose"
        )
    )
    addresses = {row[0]: row[1:] for row in Contact.objects.filter(pk__in=ids).values_list("id", "email", "phone")}

    def reachable_by(contact_id: int) -> str:
        email, phone = addresses[contact_id]
        if email and (contact_id, "email") in granted:
            return "email"
        if phone and (contact_id, "sms") in granted:
            return "sms"
        return ""

    notices, sends = [], []
    campaigns = {}
    with translation.override(settings.LANGUAGE_CODE):
        for contact_id, consented_at, last in due:
            channel = reachable_by(contact_id)
            if not channel:  # consent withdrawn since the query
                continue
            if channel not in campaigns:
                campaigns[channel] = builtin_notice_campaign(channel)
            campaign = campaigns[channel]
            anniversary = _anniversary(last, now=now, period=period)
            key = f"ads-reconsent:{contact_id}:{anniversary:%Y%m%d%H%M%S}"
            notices.append(
                AdsConsentNotice(
                    contact_id=contact_id, consented_at=consented_at, anniversary=anniversary, channel=channel
                )
            )
            local = timezone.localtime(consented_at)
            sends.append(
                Send(
                    campaign=campaign,
                    contact_id=contact_id,
                    key=key,
                    channel=channel,
                    advertising=False,
                    counts_toward_cap=False,
                    due_at=now,
                    context={
                        "event": {
                            "consented_on": formats.date_format(local, "DATE_FORMAT"),
                            "sender": campaign.sender_name or settings.LOOP_SENDER_NAME,
                            "opt_out_phone": settings.LOOP_OPTOUT_PHONE,
                        }
                    },
                )
            )
    if not sends:
        return result
    variants = {c.pk: c.variants.order_by("id").first() for c in campaigns.values()}
    for send in sends:
        send.variant = variants[send.campaign_id]
    with transaction.atomic():
        Send.objects.bulk_create(sends, ignore_conflicts=True)
        # Ours are the ones not enqueued yet (a concurrent run's were enqueued in its own transaction).
        created = dict(Send.objects.filter(key__in=[s.key for s in sends], enqueued_at=None).values_list("key", "pk"))
        for notice, send in zip(notices, sends, strict=True):
            notice.send_id = created.get(send.key)
        AdsConsentNotice.objects.bulk_create([n for n in notices if n.send_id], ignore_conflicts=True)
        for notice in notices:
            if notice.send_id:
                result[notice.channel] += 1
        sends_enqueue(send_ids=list(created.values()), now=now)
    return result
