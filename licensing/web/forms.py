from __future__ import annotations

from typing import Any

from django import forms

from crm.models import User


class ActivationForm(forms.Form):
    # No max_length: the key check refuses oversize text first, with a reason in words.
    key = forms.CharField(
        label="License key",
        widget=forms.Textarea(
            attrs={
                "rows": 5,
                "spellcheck": "false",
                "autocomplete": "off",
                "autocapitalize": "off",
                "class": "license-key",
            }
        ),
        help_text="Paste the whole key from the vendor's message; line breaks do not matter.",
    )


class SeatsForm(forms.Form):
    """The ticked users: the page's checkboxes, one per active user."""

    users = forms.ModelMultipleChoiceField(
        queryset=User.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["users"]
        assert isinstance(field, forms.ModelMultipleChoiceField)  # noqa: S101  (for mypy)
        field.queryset = User.objects.filter(is_active=True)

    def ticked_ids(self) -> set[int]:
        """What the boxes show: the submitted ticks, or none before submission."""
        if self.is_bound and self.is_valid():
            return {u.pk for u in self.cleaned_data["users"]}
        return set()
