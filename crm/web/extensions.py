"""Places on the record pages where other apps add their own parts, without crm knowing them.

An app registers providers from its AppConfig.ready(); the record views ask them for what to
show. Providers receive the request's user and a record (or module) the page has already
checked access to, and return nothing for records that are not theirs.

- `record_panels`: blocks on a record's page (a template and its context);
- `record_actions`: buttons in a record page's header (each a POST form);
- `list_actions`: mass actions on a module's list (checkboxes appear when there are any);
- `notices`: a block at the top of any page, read once (for "… done. Undo");
- `comment_hints`: lines under a record's comment box (for "Comments are mailed to …").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest

from crm.models import Module, Record, User


@dataclass(frozen=True)
class Panel:
    template: str
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Action:
    label: str
    url: str  # POSTed to; a list action receives the chosen ids as `records`
    style: str = ""  # a button class: "danger", "primary" or none
    method: str = "post"  # "get": a link that opens a page (a form of its own)


PanelProvider = Callable[[User, Record], list[Panel]]
ActionProvider = Callable[[User, Record], list[Action]]
ListActionProvider = Callable[[User, Module], list[Action]]
NoticeProvider = Callable[[HttpRequest], list[Panel]]
HintProvider = Callable[[User, Record], list[str]]

_panels: list[PanelProvider] = []
_actions: list[ActionProvider] = []
_list_actions: list[ListActionProvider] = []
_notices: list[NoticeProvider] = []
_comment_hints: list[HintProvider] = []


def register(
    *,
    panels: PanelProvider | None = None,
    actions: ActionProvider | None = None,
    list_actions: ListActionProvider | None = None,
    notices: NoticeProvider | None = None,
    comment_hints: HintProvider | None = None,
) -> None:
    """Add providers (once each: ready() may run twice in tests and management commands)."""
    _add(_panels, panels)
    _add(_actions, actions)
    _add(_list_actions, list_actions)
    _add(_notices, notices)
    _add(_comment_hints, comment_hints)


def _add(registry: list[Any], provider: Callable[..., Any] | None) -> None:
    if provider is not None and provider not in registry:
        registry.append(provider)


def record_panels(user: User, record: Record) -> list[Panel]:
    return [panel for provider in _panels for panel in provider(user, record)]


def record_actions(user: User, record: Record) -> list[Action]:
    return [action for provider in _actions for action in provider(user, record)]


def list_actions(user: User, module: Module) -> list[Action]:
    return [action for provider in _list_actions for action in provider(user, module)]


def notices(request: HttpRequest) -> list[Panel]:
    return [notice for provider in _notices for notice in provider(request)]


def comment_hints(user: User, record: Record) -> list[str]:
    return [hint for provider in _comment_hints for hint in provider(user, record)]
