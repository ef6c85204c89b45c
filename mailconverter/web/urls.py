from __future__ import annotations

from django.urls import path

from mailconverter.web import oauth2_views, smtp_views, views

app_name = "mailconverter"

urlpatterns = [
    path("", views.mailbox_list, name="mailboxes"),
    path("new/", views.mailbox_create, name="mailbox_create"),
    path("<int:pk>/", views.mailbox_edit, name="mailbox"),
    path("<int:pk>/delete/", views.mailbox_delete, name="mailbox_delete"),
    path("<int:pk>/outgoing/", smtp_views.mailbox_smtp, name="smtp"),
    path("<int:pk>/test-connection/", views.connection_test, name="test_connection"),
    path("<int:pk>/oauth2/connect/", oauth2_views.oauth2_connect, name="oauth2_connect"),
    # The redirect URI registered at Microsoft or Google: one address for every mailbox.
    path("oauth2/", oauth2_views.oauth2_callback, name="oauth2_callback"),
    path("<int:pk>/folders/", views.folders, name="folders"),
    path("<int:pk>/folders/refresh/", views.folders_refresh, name="folders_refresh"),
    path("<int:pk>/rules/", views.rule_list, name="rules"),
    path("<int:pk>/rules/new/", views.rule_create, name="rule_create"),
    path("<int:pk>/rules/<int:rule_pk>/", views.rule_edit, name="rule"),
    path("<int:pk>/rules/<int:rule_pk>/delete/", views.rule_delete, name="rule_delete"),
    path("<int:pk>/rules/<int:rule_pk>/move/", views.rule_move, name="rule_move"),
    path("<int:pk>/test-rule/", views.rule_test, name="test_rule"),
    path("<int:pk>/activity/", views.activity, name="activity"),
    path("<int:pk>/scan/", views.scan, name="scan"),
    path("<int:pk>/scan/<int:run_pk>/", views.scan_progress, name="scan_progress"),
    path("<int:pk>/quarantine/<int:entry_pk>/retry/", views.quarantine_retry, name="retry"),
    path("<int:pk>/quarantine/<int:entry_pk>/raw/", views.quarantine_raw, name="raw"),
    path("<int:pk>/blocked/", views.sender_block, name="block"),
    path("<int:pk>/blocked/<int:blocked_pk>/remove/", views.sender_unblock, name="unblock"),
]
