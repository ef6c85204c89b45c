from __future__ import annotations

from django.urls import path

from mailconverter import answer_views

app_name = "converter_answers"

urlpatterns = [
    path("<int:pk>/", answer_views.answer, name="answer"),
    path("<int:pk>/info/", answer_views.answer_info, name="answer_info"),
]
