from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from campaigns.views import track_click, track_open, unsubscribe
from config.views import healthz, not_found
from crm.preference_center import preference_center
from crm.preferences import set_language
from journeys.views import lead_form_submit, survey

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("i18n/setlang/", set_language, name="set_language"),  # remembers the choice on the user
    path("i18n/", include("django.conf.urls.i18n")),
    path("admin/", admin.site.urls),
    path("u/<str:token>/", unsubscribe, name="unsubscribe"),
    path("t/c/<str:token>", track_click, name="track-click"),
    path("t/o/<str:token>.gif", track_open, name="track-open"),
    # ESP delivery/engagement webhooks (anymail): /webhooks/anymail/<esp>/tracking/, /webhooks/anymail/<esp>/inbound/
    path("webhooks/anymail/", include("anymail.urls")),
    path("p/<str:token>/", preference_center, name="preference_center"),
    path("api/v1/", include("crm.api.urls")),
    path("api/v1/journeys/", include("journeys.api")),
    path("forms/<slug:slug>", lead_form_submit, name="lead-form"),
    path("s/<str:token>", survey, name="survey"),
    path("webhooks/", include("campaigns.webhooks")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
]

handler404 = not_found
