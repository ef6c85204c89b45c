from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/addin/v1/", include("mailconnector.api.urls")),
    path("settings/mail-connector/", include("licensing.web.urls")),
    path("settings/mail-converter/", include("mailconverter.web.urls")),
    path("account/", include("mailconnector.web.urls")),
    path("addin/", include("mailconnector.addin_urls")),
    path("mail-tickets/", include("mailconverter.ticket_urls")),
    path("mail-answers/", include("mailconverter.answer_urls")),
    path("", include("crm.web.urls")),
]

# Under /api/ errors are problem+json, never an HTML page; elsewhere the CRM's own pages.
handler404 = "mailconnector.api.errors.not_found_view"
handler500 = "mailconnector.api.errors.server_error_view"
