"""The mail converter's settings forms: a mailbox, a rule with its rows, the small ones.

Forms parse and check the shape of input; what a rule may contain is checked by the service
(`services.save_rule`), whose errors are put back next to the row they name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.http import QueryDict

from crm.models import User
from mailconverter import actions
from mailconverter.models import Mailbox, Outcome, Rule
from mailconverter.rules import OPERATOR_LABELS, ConditionField
from mailconverter.services import OAuth2Grant, RuleInput

# What `scanner.connection_settings` reads from the advanced parameters, and their types.
CONNECTION_OPTIONS: dict[str, tuple[type, ...]] = {"timeout": (int, float), "ca_file": (str,)}


class MailboxForm(forms.ModelForm):
    # Write-only: never rendered back (render_value=False); left blank, the stored one stays.
    password = forms.CharField(
        label="Password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )

    oauth2_token_url = forms.URLField(
        label="OAuth2 token endpoint", required=False, max_length=500, assume_scheme="https"
    )
    # XOAUTH2's secrets: write-only like the password.
    oauth2_client_secret = forms.CharField(
        label="OAuth2 client secret",
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )
    oauth2_refresh_token = forms.CharField(
        label="OAuth2 refresh token",
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="From the mailbox account's consent to the app registration.",
    )

    class Meta:
        model = Mailbox
        # Explicit, in the page's order; XOAUTH2's own fields follow "auth".
        fields = [
            "name",
            "host",
            "port",
            "security",
            "verify_certificate",
            "username",
            "auth",
            "oauth2_token_url",
            "oauth2_client_id",
            "oauth2_scope",
            "address",
            "connection_options",
            "is_pec",
            "enabled",
            "look_for",
            "after_scan",
            "processed_folder",
            "unmatched_folder",
            "spam_folder",
            "interval_minutes",
            "owner",
        ]
        labels = {
            "host": "Server",
            "verify_certificate": "Check the server's certificate",
            "auth": "Authentication",
            "address": "Mailbox address",
            "connection_options": "Advanced connection parameters",
            "is_pec": "Certified mail (PEC)",
            "look_for": "Look for",
            "after_scan": "After scan",
            "processed_folder": "Folder for processed mail",
            "unmatched_folder": "Folder for unmatched mail",
            "spam_folder": "Folder for spam",
            "interval_minutes": "Scan every (minutes)",
            "owner": "Owner of created records",
        }
        help_texts = {
            "connection_options": 'A JSON object, for example {"timeout": 30, "ca_file": '
            '"/etc/ssl/private-ca.pem"}. Leave {} for the defaults.',
            "processed_folder": "Used when mail is moved after the scan.",
            "spam_folder": "Where “Mark as spam” moves the message on the server.",
        }
        widgets = {
            "connection_options": forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        }

    # The order of the page: the password right after the username.
    field_order = [
        "name",
        "host",
        "port",
        "security",
        "verify_certificate",
        "username",
        "password",
        "auth",
        "oauth2_token_url",
        "oauth2_client_id",
        "oauth2_client_secret",
        "oauth2_refresh_token",
        "oauth2_scope",
    ]
    # The service's names for the OAuth2 fields, to put its errors back next to them.
    OAUTH2_FIELDS = {
        "token_endpoint": "oauth2_token_url",
        "client_id": "oauth2_client_id",
        "refresh_token": "oauth2_refresh_token",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        owner = self.fields["owner"]
        assert isinstance(owner, forms.ModelChoiceField)  # noqa: S101  (for mypy)
        owner.queryset = User.objects.filter(is_active=True).order_by("username")
        self.fields["password"].help_text = (
            "Leave blank to keep the stored password."
            if self.instance.pk and self.instance.secret
            else "Stored encrypted; never shown again."
        )
        if self.instance.pk and self.instance.oauth2_client_secret:
            self.fields["oauth2_client_secret"].help_text = "Leave blank to keep the stored one."
        if self.instance.pk and self.instance.oauth2_refresh_token:
            self.fields["oauth2_refresh_token"].help_text = "Leave blank to keep the stored one."

    def oauth2_grant(self) -> OAuth2Grant | None:
        """What the service needs to sign in with XOAUTH2, when that is the chosen method."""
        data = self.cleaned_data
        if data.get("auth") != Mailbox.Auth.XOAUTH2:
            return None
        return OAuth2Grant(
            token_endpoint=data.get("oauth2_token_url") or "",
            client_id=data.get("oauth2_client_id") or "",
            client_secret=data.get("oauth2_client_secret") or "",
            refresh_token=data.get("oauth2_refresh_token") or "",
            scope=data.get("oauth2_scope") or "",
        )

    def clean_connection_options(self) -> dict[str, Any]:
        value = self.cleaned_data.get("connection_options")
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError('Enter a JSON object, like {"timeout": 30}.')
        for key, item in value.items():
            kinds = CONNECTION_OPTIONS.get(key)
            if kinds is None:
                known = ", ".join(CONNECTION_OPTIONS)
                raise forms.ValidationError(f"Unknown parameter “{key}”; known: {known}.")
            if not isinstance(item, kinds) or isinstance(item, bool):
                raise forms.ValidationError(f"“{key}” has the wrong type.")
        timeout = value.get("timeout")
        if timeout is not None and not 1 <= timeout <= 600:
            raise forms.ValidationError("“timeout” is in seconds, from 1 to 600.")
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        # OAuth2 (XOAUTH2) signs in with a token, not a password.
        signs_in_with_password = data.get("auth") != "xoauth2"
        if signs_in_with_password and not self.instance.secret and not data.get("password"):
            self.add_error("password", "Enter the mailbox's password.")
        return data


# --- rules -------------------------------------------------------------------------------------

FIELD_CHOICES = [(f.value, f.value.capitalize()) for f in ConditionField]
OPERATOR_CHOICES = [(op.value, label) for op, label in OPERATOR_LABELS.items()]
ACTION_CHOICES = [
    ("create_ticket", "Create a ticket"),
    ("update_ticket", "Update the ticket (by number or reply)"),
    ("link", "Link to records"),
    ("link_or_create", "Link, creating the record if missing"),
    ("nothing", "Do nothing"),
]
MODULE_CHOICES = [(m, m) for m in actions.LINKABLE]
BY_CHOICES = [("sender", "the sender"), ("recipients", "the recipients"), ("both", "both")]
MATCH_CHOICES = [("all", "all conditions"), ("any", "any condition")]


@dataclass
class ConditionRow:
    field: str = "subject"
    operator: str = "contains"
    value: str = ""
    error: str = ""


@dataclass
class ActionRow:
    type: str = "create_ticket"
    module: str = "Contacts"
    by: str = "sender"
    create_lead: bool = False
    status: str = ""
    priority: str = ""
    error: str = ""

    def stored(self) -> dict[str, Any]:
        """The action as `mailconverter.actions` reads it: only the options of its type."""
        action: dict[str, Any] = {"type": self.type}
        if self.type == "create_ticket":
            if self.create_lead:
                action["create_lead"] = True
            if self.priority:
                action["priority"] = self.priority
        if self.type in ("create_ticket", "update_ticket") and self.status:
            action["status"] = self.status
        if self.type in ("link", "link_or_create"):
            action |= {"module": self.module, "by": self.by}
        return action


@dataclass
class RuleForm:
    """A rule with any number of condition and action rows.

    Rows are numbered fields (`condition-0-field`, `action-1-type`…). The "add a row" and
    "remove" buttons submit the form and the page comes back with the rows changed and what
    was typed kept, so the editor needs no script.
    """

    name: str = ""
    enabled: bool = True
    match: str = "all"
    stop_after_match: bool = True
    conditions: list[ConditionRow] = field(default_factory=list)
    actions: list[ActionRow] = field(default_factory=lambda: [ActionRow()])
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_rule(cls, rule: Rule) -> RuleForm:
        return cls(
            name=rule.name,
            enabled=rule.enabled,
            match=rule.match,
            stop_after_match=rule.stop_after_match,
            conditions=[
                ConditionRow(
                    str(c.get("field", "")), str(c.get("operator", "")), str(c.get("value", ""))
                )
                for c in rule.conditions or []
            ],
            actions=[
                ActionRow(
                    type=str(a.get("type", "")),
                    module=str(a.get("module", "Contacts")),
                    by=str(a.get("by", "sender")),
                    create_lead=bool(a.get("create_lead")),
                    status=str(a.get("status", "")),
                    priority=str(a.get("priority", "")),
                )
                for a in rule.actions or []
            ],
        )

    @classmethod
    def from_post(cls, post: QueryDict) -> RuleForm:
        def count(name: str) -> int:
            try:
                return min(int(post.get(name, "0")), 50)
            except ValueError:
                return 0

        return cls(
            name=post.get("name", "").strip(),
            enabled=post.get("enabled") == "on",
            match=post.get("match", "all"),
            stop_after_match=post.get("stop_after_match") == "on",
            conditions=[
                ConditionRow(
                    post.get(f"condition-{i}-field", ""),
                    post.get(f"condition-{i}-operator", ""),
                    post.get(f"condition-{i}-value", ""),
                )
                for i in range(count("conditions"))
            ],
            actions=[
                ActionRow(
                    type=post.get(f"action-{i}-type", ""),
                    module=post.get(f"action-{i}-module", ""),
                    by=post.get(f"action-{i}-by", "sender"),
                    create_lead=post.get(f"action-{i}-create_lead") == "on",
                    status=post.get(f"action-{i}-status", "").strip(),
                    priority=post.get(f"action-{i}-priority", "").strip(),
                )
                for i in range(count("actions"))
            ],
        )

    def edit(self, command: str) -> bool:
        """Apply an "add"/"remove" button; False when the command is not one (it is "save")."""
        verb, _, index = command.partition(":")
        if verb == "add-condition":
            self.conditions.append(ConditionRow())
        elif verb == "add-action":
            self.actions.append(ActionRow(type="link"))
        elif verb == "remove-condition" and index.isdigit():
            del self.conditions[int(index) : int(index) + 1]
        elif verb == "remove-action" and index.isdigit():
            del self.actions[int(index) : int(index) + 1]
        else:
            return False
        return True

    def value(self) -> RuleInput:
        return RuleInput(
            name=self.name,
            enabled=self.enabled,
            match=self.match,
            conditions=[
                {"field": c.field, "operator": c.operator, "value": c.value}
                for c in self.conditions
            ],
            actions=[a.stored() for a in self.actions],
            stop_after_match=self.stop_after_match,
        )

    def add_errors(self, fields: Mapping[str, str], detail: str) -> None:
        """Put the service's errors (`conditions.2`, `actions.0`, `name`…) next to their rows."""
        for key, message in fields.items():
            group, _, index = key.partition(".")
            rows: list[Any] = self.conditions if group == "conditions" else self.actions
            if group in ("conditions", "actions") and index.isdigit() and int(index) < len(rows):
                rows[int(index)].error = message
            else:
                self.errors[key] = message
        if not fields:
            self.errors["rule"] = detail

    @property
    def has_errors(self) -> bool:
        return bool(
            self.errors
            or any(c.error for c in self.conditions)
            or any(a.error for a in self.actions)
        )


# --- the small ones ----------------------------------------------------------------------------


class TestRuleForm(forms.Form):
    raw = forms.CharField(
        label="Email source",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false", "class": "mono"}),
        help_text="Paste the whole email, headers included (in most mail programs: "
        "“Show original” or “View source”).",
    )
    eml = forms.FileField(label="Or an .eml file", required=False)
    folder = forms.CharField(label="As if found in the folder", initial="INBOX", max_length=1000)

    def raw_bytes(self) -> bytes:
        upload = self.cleaned_data.get("eml")
        if upload is not None:
            return bytes(upload.read())
        # A pasted email arrives with the browser's line breaks; the parser accepts them.
        return str(self.cleaned_data.get("raw") or "").encode("utf-8", "surrogateescape")


TestRuleForm.__test__ = False  # type: ignore[attr-defined]


class BlockForm(forms.Form):
    address = forms.CharField(label="Email address", max_length=320)
    reason = forms.CharField(label="Reason", max_length=255, required=False)


class LedgerSearchForm(forms.Form):
    sender = forms.CharField(
        label="Sender",
        required=False,
        max_length=320,
        widget=forms.TextInput(attrs={"placeholder": "Sender"}),
    )
    subject = forms.CharField(
        label="Subject",
        required=False,
        max_length=500,
        widget=forms.TextInput(attrs={"placeholder": "Subject"}),
    )
    outcome = forms.ChoiceField(
        label="Outcome", required=False, choices=[("", "Any"), *Outcome.choices]
    )
