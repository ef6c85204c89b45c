"""Signals other apps receive from the CRM's services, so that crm never imports them.

`comment_added` is sent once the transaction that added a comment has committed (the comment
is then for real, and whatever a receiver does cannot roll it back): the mail converter mails
comments on its tickets to the customer. Receivers get `comment` (a `crm.models.Comment`)
and must not raise: the comment is already saved and the user's request has succeeded.
"""

from __future__ import annotations

from django.dispatch import Signal

comment_added = Signal()
