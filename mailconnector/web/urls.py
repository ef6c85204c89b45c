"""The user's own account page, mounted at /account/."""

from __future__ import annotations

from django.urls import path

from mailconnector.web import views

app_name = "account"

urlpatterns = [
    path("", views.profile, name="profile"),
    path("totp/start/", views.totp_start, name="totp_start"),
    path("totp/confirm/", views.totp_confirm, name="totp_confirm"),
    path("totp/cancel/", views.totp_cancel, name="totp_cancel"),
    path("totp/remove/", views.totp_remove, name="totp_remove"),
    path("sessions/<int:pk>/end/", views.session_end, name="session_end"),
    path("sessions/end-all/", views.sessions_end_all, name="sessions_end_all"),
]
