from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import include, path

from crm.web import compose_views, message_views, outgoing_views, views

crm_patterns = [
    path("", views.home, name="home"),
    path("recycle-bin/", views.recycle_bin, name="recycle_bin"),
    path("recycle-bin/<int:pk>/restore/", views.record_restore, name="record_restore"),
    path("recycle-bin/<int:pk>/purge/", views.record_purge, name="record_purge"),
    path("m/<str:module>/", views.record_list, name="record_list"),
    path("m/<str:module>/new/", views.record_create, name="record_create"),
    path("m/<str:module>/<int:pk>/", views.record_detail, name="record_detail"),
    path("m/<str:module>/<int:pk>/edit/", views.record_edit, name="record_edit"),
    path("m/<str:module>/<int:pk>/delete/", views.record_delete, name="record_delete"),
    path("m/<str:module>/<int:pk>/comments/", views.comment_add, name="comment_add"),
    path("m/<str:module>/<int:pk>/tab/<str:tab>/", views.record_tab, name="record_tab"),
    path("m/<str:module>/<int:pk>/compose/", compose_views.compose, name="compose"),
    path(
        "m/<str:module>/<int:pk>/emails/<int:message_id>/",
        message_views.message_detail,
        name="message_detail",
    ),
    path(
        "m/<str:module>/<int:pk>/emails/<int:message_id>/body/",
        message_views.message_body,
        name="message_body",
    ),
    path(
        "m/<str:module>/<int:pk>/emails/<int:message_id>/raw/",
        message_views.message_raw,
        name="message_raw",
    ),
    path(
        "m/<str:module>/<int:pk>/emails/<int:message_id>/files/<int:attachment_id>/",
        message_views.attachment_download,
        name="attachment_download",
    ),
    path(
        "m/<str:module>/<int:pk>/documents/<int:document_id>/",
        message_views.document_download,
        name="document_download",
    ),
    path(
        "m/<str:module>/<int:pk>/documents/<int:document_id>/thumbnail/",
        message_views.document_thumbnail,
        name="document_thumbnail",
    ),
    path("inline/<str:token>/", message_views.inline_part, name="inline_part"),
    # Open tracking: public, signed (crm.services.tracking).
    path("t/<str:token>.gif", compose_views.open_pixel, name="open_pixel"),
    path("settings/outgoing-mail/", outgoing_views.outgoing_settings, name="outgoing_settings"),
    path("settings/outgoing-mail/test/", outgoing_views.outgoing_test, name="outgoing_test"),
]

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="crm/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include((crm_patterns, "crm"))),
]
