"""The product's admin site: branded, and its index grouped by the marketer's work rather than by Django app.

Each model is placed in a section by its ``app_label.model_name``; ``ADMIN_SECTIONS`` is the one place that says
where a model appears. A model not listed there is shown under "Settings", so nothing registered is ever hidden.
"""

from __future__ import annotations

from django.contrib import admin
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop

from config.login_throttle import ThrottledAdminAuthenticationForm

#: (section key, title, models in display order). Later issues add their models here.
ADMIN_SECTIONS: list[tuple[str, object, list[str]]] = [
    (
        "contacts",
        _("Contacts"),
        [
            "crm.contact",
            "crm.event",
            "crm.tag",
            "crm.contactlist",
            "crm.coupon",
            "crm.order",
            "crm.cart",
            "crm.wishlistitem",
            "crm.device",
            "crm.consentchange",
            "crm.contactimport",
        ],
    ),
    ("segments", _("Segments"), ["crm.segment"]),
    (
        "campaigns",
        _("Campaigns"),
        [
            "campaigns.campaign",
            "campaigns.launchapproval",
            "campaigns.run",
            "campaigns.send",
            "campaigns.conversion",
            "campaigns.click",
            "campaigns.open",
            "campaigns.outboxmessage",
            "campaigns.suppression",
            "campaigns.adsconsentnotice",
            "campaigns.template",
            "campaigns.senderprofile",
            "campaigns.kakaotemplate",
            "campaigns.notification",
        ],
    ),
    ("journeys", _("Journeys"), ["journeys.journey", "journeys.enrollment", "journeys.leadform", "journeys.playbook"]),
    ("reports", _("Reports"), ["campaigns.report", "journeys.report"]),
    (
        "settings",
        _("Settings"),
        [
            "crm.source",
            "crm.apikey",
            "crm.auditentry",
            "crm.rejectedmessage",
            "crm.unprocessedevent",
            "crm.heartbeat",
            "campaigns.destination",
            "auth.user",
            "auth.group",
            "django_celery_beat.periodictask",
            "django_celery_beat.crontabschedule",
            "django_celery_beat.intervalschedule",
            "django_celery_beat.clockedschedule",
            "django_celery_beat.solarschedule",
        ],
    ),
]
FALLBACK_SECTION = "settings"

#: Strings of Django and of third-party apps that their own Korean catalogues leave in English or get wrong. They are
#: listed here only so that ``makemessages`` extracts them into locale/ko, whose translations Django prefers
#: (LOCALE_PATHS come first).
CATALOGUE_FIXES = (
    gettext_noop("Select %s to view"),
    gettext_noop("View %s"),
    gettext_noop("periodic task"),
    gettext_noop("periodic tasks"),
    gettext_noop("crontab"),
    gettext_noop("crontabs"),
    gettext_noop("interval"),
    gettext_noop("intervals"),
    gettext_noop("clocked"),
    gettext_noop("solar event"),
    gettext_noop("solar events"),
)


class LoopAdminSite(admin.AdminSite):
    site_header = _("Loop CRM")
    site_title = _("Loop CRM")
    index_title = _("Marketing workspace")
    enable_nav_sidebar = True
    login_form = ThrottledAdminAuthenticationForm

    def login(self, request, extra_context=None):
        """Django's login page; a locked-out (user name, address) pair is answered 429 (config/login_throttle.py)."""
        response = super().login(request, extra_context)
        if getattr(request, "login_locked", False):
            response.status_code = 429
        return response

    def index(self, request, extra_context=None):
        """The sections, with the marketer's dashboard above them (``config.dashboard``); ``?format=csv&table=KEY``
        downloads one of its tables."""
        from config.dashboard import dashboard_context, dashboard_view_context
        from config.reports import csv_download, csv_requested

        context = dashboard_context(request)
        if csv_requested(request):
            return csv_download(request, context["tables"], prefix="dashboard")
        extra = {**(extra_context or {}), "dashboard": dashboard_view_context(request, context)}
        return super().index(request, extra)

    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        if app_label is not None:
            # An app's own index page (/admin/crm/) keeps Django's grouping.
            return apps
        return group_by_section(apps)


def group_by_section(apps: list[dict]) -> list[dict]:
    """Regroup Django's per-app model list into the product's sections, in ADMIN_SECTIONS order."""
    placement = {
        label: (key, position) for key, _title, labels in ADMIN_SECTIONS for position, label in enumerate(labels)
    }
    sections: dict[str, dict] = {
        key: {"name": title, "app_label": key, "app_url": "", "has_module_perms": True, "models": []}
        for key, title, _labels in ADMIN_SECTIONS
    }
    for app in apps:
        for model in app["models"]:
            label = f"{app['app_label']}.{model['object_name'].lower()}"
            key, position = placement.get(label, (FALLBACK_SECTION, 10_000))
            sections[key]["models"].append((position, str(model["name"]), model))
    result = []
    for key, _title, _labels in ADMIN_SECTIONS:
        section = sections[key]
        if not section["models"]:
            continue
        section["models"] = [model for _pos, _name, model in sorted(section["models"], key=lambda m: (m[0], m[1]))]
        # The section link goes to its first model's list.
        section["app_url"] = section["models"][0].get("admin_url") or ""
        result.append(section)
    return result
