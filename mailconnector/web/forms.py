from __future__ import annotations

from django import forms


class TotpCodeForm(forms.Form):
    code = forms.RegexField(
        regex=r"^\s*[0-9]{3}\s?[0-9]{3}\s*$",
        max_length=16,
        label="Code from the app",
        error_messages={"invalid": "Enter the six digits the app shows."},
        widget=forms.TextInput(
            attrs={"inputmode": "numeric", "autocomplete": "one-time-code", "size": 8}
        ),
    )


class PasswordForm(forms.Form):
    password = forms.CharField(
        max_length=1024,
        strip=False,
        label="Your password",
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )
