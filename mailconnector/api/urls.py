from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView

from mailconnector.api import views

urlpatterns = [
    path("meta", views.MetaApi.as_view(), name="addin-meta"),
    path("auth/sso/", include("mailconnector.api.sso_urls")),
    path("auth/", include("mailconnector.api.auth_urls")),
    path("modules", views.ModuleListApi.as_view(), name="addin-modules"),
    path("modules/<str:name>/records", views.RecordSearchApi.as_view(), name="addin-search"),
    path("suggestions", views.SuggestionListApi.as_view(), name="addin-suggestions"),
    path("emails", views.EmailLinkApi.as_view(), name="addin-emails"),
    path("emails/lookup", views.EmailLookupApi.as_view(), name="addin-lookup"),
    path(
        "emails/<int:message>/links/<str:module>/<int:record>",
        views.EmailUnlinkApi.as_view(),
        name="addin-unlink",
    ),
    path("schema/", SpectacularAPIView.as_view(), name="addin-schema"),
    path("docs/", SpectacularRedocView.as_view(url_name="addin-schema"), name="addin-docs"),
]
