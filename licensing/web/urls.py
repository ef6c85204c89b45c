from __future__ import annotations

from django.urls import path

from licensing.web import views

app_name = "licensing"

urlpatterns = [
    path("", views.mail_connector, name="mail_connector"),
    path("activate/", views.activate, name="activate"),
    path("users/", views.users, name="users"),
]
