"""The public lead form endpoint ``POST /forms/<slug>`` (see ``journeys.services.leads``).

Public and without CSRF (other sites post to it: Typeform's servers, a Google Apps Script, an HTML form on the
shop's site); Typeform submissions are authenticated by their signature when the form has a secret. JSON bodies get
JSON answers (201, or 400 with errors by field); HTML forms are redirected to the thank-you page.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from config import ratelimit
from config.logging import get_logger
from journeys.models import LeadForm
from journeys.services.leads import Submission, lead_submit, parse_json, parse_typeform, typeform_signature_valid

logger = get_logger(__name__)

#: Largest submission accepted (bytes).
MAX_BODY = 64 * 1024


def _over_limit(request: HttpRequest, form: LeadForm) -> bool:
    """More than ``LEAD_FORM_RATE_LIMIT`` submissions from this address to this form in the current window."""
    return ratelimit.hit(
        "leadform", str(form.pk), ratelimit.client_address(request), rate=settings.LOOP_LEAD_FORM_RATE_LIMIT
    )


@csrf_exempt
@require_POST
def lead_form_submit(request: HttpRequest, slug: str) -> HttpResponse:
    form = get_object_or_404(LeadForm, slug=slug)
    if _over_limit(request, form):
        return JsonResponse(
            {"code": "rate_limited", "message": _("Too many submissions; try again later.")}, status=429
        )
    if len(request.body) > MAX_BODY:
        return JsonResponse({"code": "too_large", "message": _("The submission is too large.")}, status=413)
    is_json = request.content_type == "application/json"
    if is_json:
        try:
            payload = json.loads(request.body or b"{}")
        except (ValueError, UnicodeDecodeError):
            return JsonResponse({"code": "invalid_json", "message": _("The body is not valid JSON.")}, status=400)
        if not isinstance(payload, dict):
            return JsonResponse({"code": "invalid_json", "message": _("The body must be a JSON object.")}, status=400)
        typeform = "form_response" in payload
        if form.typeform_secret and not (
            typeform
            and typeform_signature_valid(
                secret=form.typeform_secret, body=request.body, header=request.headers.get("Typeform-Signature", "")
            )
        ):
            logger.warning("leads.signature_invalid", form=form.slug)
            return JsonResponse(
                {"code": "signature_invalid", "message": _("Missing or invalid signature.")}, status=401
            )
        submission = parse_typeform(payload) if typeform else parse_json(payload)
    else:
        submission = Submission(fields={key: request.POST.get(key) for key in request.POST})
    try:
        contact, entered = lead_submit(form=form, submission=submission)
    except ValidationError as exc:
        if is_json:
            return JsonResponse({"code": "invalid", "errors": exc.message_dict}, status=400)
        return TemplateResponse(request, "journeys/lead_form_error.html", {"errors": exc.message_dict}, status=400)
    logger.info("leads.submitted", form=form.slug, contact_id=contact.pk, entered=entered)
    if is_json:
        return JsonResponse({"ok": True, "entered": entered}, status=201)
    if form.redirect_url:
        return HttpResponseRedirect(form.redirect_url)
    return TemplateResponse(request, "journeys/lead_form_thanks.html", {"form": form})


@never_cache
def survey(request: HttpRequest, token: str) -> HttpResponse:
    """The survey page of a signed link: a score from 1 to 5 and a comment."""
    from journeys.services.surveys import survey_answer, survey_enrollment

    if ratelimit.link_refused(request, name="survey"):
        return ratelimit.too_many_requests(settings.LOOP_BAD_LINK_RATE_LIMIT)
    context: dict = {"scores": range(1, 6), "token": token}
    try:
        enrollment = survey_enrollment(token)
    except ValidationError as exc:
        ratelimit.link_bad(request, name="survey")
        return TemplateResponse(request, "journeys/survey.html", {"problem": exc.messages[0]}, status=404)
    if ratelimit.link_over_limit(request, name="survey", token=token):
        return ratelimit.too_many_requests(settings.LOOP_SIGNED_LINK_RATE_LIMIT)
    context["contact_name"] = enrollment.contact.name
    if "survey_score" in enrollment.context:
        context["done"] = True
    elif request.method == "POST":
        try:
            score = int(request.POST.get("score", ""))
        except ValueError:
            score = 0
        try:
            survey_answer(token=token, score=score, comment=request.POST.get("comment", ""))
            context["done"] = True
        except ValidationError as exc:
            context["errors"] = exc.messages
            return TemplateResponse(request, "journeys/survey.html", context, status=400)
    return TemplateResponse(request, "journeys/survey.html", context)
