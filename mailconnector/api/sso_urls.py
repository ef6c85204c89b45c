"""Single sign-on in the Office dialog, under /api/addin/v1/auth/sso/."""

from __future__ import annotations

from django.urls import path

from mailconnector.api import sso_views

urlpatterns = [
    path("authorize", sso_views.SsoAuthorizeApi.as_view(), name="addin-sso-authorize"),
    path("callback", sso_views.SsoCallbackApi.as_view(), name="addin-sso-callback"),
    path("token", sso_views.SsoTokenApi.as_view(), name="addin-sso-token"),
]
