"""/api/v1/: Segment-compatible tracking endpoints (no trailing slash, as the SDKs post) and native resources."""

from django.urls import path

from crm.api import views

app_name = "crm_api"

urlpatterns = [
    path("batch", views.BatchView.as_view(), name="batch"),
    path("track", views.TrackView.as_view(), name="track"),
    path("identify", views.IdentifyView.as_view(), name="identify"),
    path("page", views.PageView.as_view(), name="page"),
    path("screen", views.ScreenView.as_view(), name="screen"),
    path("alias", views.AliasView.as_view(), name="alias"),
    path("group", views.GroupView.as_view(), name="group"),
    path("events", views.EventsView.as_view(), name="events"),
    path("contacts", views.ContactListView.as_view(), name="contacts"),
    path("contacts/<str:external_id>", views.ContactDetailView.as_view(), name="contact"),
    path("contacts/<str:external_id>/cart", views.ContactCartView.as_view(), name="contact-cart"),
    path("contacts/<str:external_id>/coupons", views.ContactCouponsView.as_view(), name="contact-coupons"),
    path("contacts/<str:external_id>/orders", views.ContactOrdersView.as_view(), name="contact-orders"),
]
