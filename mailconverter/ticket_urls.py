from __future__ import annotations

from django.urls import path

from mailconverter import ticket_views

app_name = "converter_tickets"

urlpatterns = [
    path("spam/", ticket_views.mark_spam_many, name="mark_spam_many"),
    path("<int:pk>/spam/", ticket_views.mark_spam, name="mark_spam"),
    path("spam/<int:pk>/undo/", ticket_views.undo_spam, name="undo_spam"),
]
