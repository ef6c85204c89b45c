"""Mounted at /api/addin/v1/auth/ by mailconnector/api/urls.py."""

from __future__ import annotations

from django.urls import path

from mailconnector.api import auth_views as views

urlpatterns = [
    path("login", views.SessionLoginApi.as_view(), name="addin-auth-login"),
    path("mfa", views.SessionMfaApi.as_view(), name="addin-auth-mfa"),
    path("refresh", views.SessionRefreshApi.as_view(), name="addin-auth-refresh"),
    path("logout", views.SessionLogoutApi.as_view(), name="addin-auth-logout"),
    path("sessions", views.SessionListApi.as_view(), name="addin-auth-sessions"),
    path(
        "sessions/<int:session_id>",
        views.SessionEndApi.as_view(),
        name="addin-auth-session-end",
    ),
]
