"""The add-in's task pane under /addin/ (see mailconnector/addin_views.py)."""

from __future__ import annotations

from django.urls import path

from mailconnector import addin_views

app_name = "addin"

urlpatterns = [
    path("", addin_views.taskpane, name="taskpane"),
    path("commands.html", addin_views.commands, name="commands"),
    path("<path:path>", addin_views.asset, name="asset"),
]
