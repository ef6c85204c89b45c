"""Mail that must never start or feed a conversation: auto-replies, bounces, our own. Pure code.

A helpdesk that answers an auto-responder gets an answer back, and so on until a quota breaks:
the loop guard says why a message is automatic, and the scanner records that reason instead
of running rules. The per-sender ticket limit needs the database and lives with the actions.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from crm.email.addresses import is_automated_sender
from crm.email.parse import ParsedEmail

__all__ = ["automatic_reason"]

# RFC 3834 §5: anything but "no" is automatic ("auto-replied", "auto-generated", "auto-notified").
# Precedence is not standardised (RFC 3834 §2 discusses it); bulk, junk, list and auto_reply are
# what mailing lists and responders send.
_AUTOMATIC_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
# Out-of-office replies from servers that set none of the headers above (old Exchange, some
# webmail). Anchored at the start of the subject, where responders put them.
_OUT_OF_OFFICE = re.compile(
    r"^\s*(?:"
    r"auto(?:matic)?[ -]?reply|autoreply|out of (?:the )?office|auto:|"
    r"automatische antwort|abwesenheitsnotiz|abwesend|"
    r"risposta automatica|fuori sede|"
    r"r[ée]ponse automatique|absence du bureau|"
    r"respuesta autom[áa]tica|fuera de la oficina|"
    r"automatisch antwoord|afwezig|"
    r"resposta autom[áa]tica|"
    r"autosvar|automatisk svar|frånvaro|fravær"
    r")",
    re.IGNORECASE,
)


def automatic_reason(parsed: ParsedEmail, *, own_addresses: Collection[str] = ()) -> str | None:
    """Why this email is automatic or ours, in words; None for mail a person sent."""
    auto = (parsed.auto_submitted or "").strip().lower()
    if auto and not auto.startswith("no"):
        return f"Auto-Submitted: {auto.split(';')[0]} (RFC 3834)"
    if parsed.x_autoreply or parsed.x_autorespond:
        return "X-Autoreply / X-Autorespond header (auto-responder)"
    precedence = (parsed.precedence or "").strip().lower()
    if precedence in _AUTOMATIC_PRECEDENCE:
        return f"Precedence: {precedence}"
    report = (parsed.report_type or "").strip().lower()
    if report == "delivery-status":
        return "delivery status notification (bounce, RFC 3464)"
    if report == "disposition-notification":
        return "read receipt (RFC 8098)"
    if report:
        return f"automatic report ({report}, RFC 6522)"
    if parsed.return_path == "":
        return "null return path <> (bounce, RFC 5321 §4.5.5)"
    sender = parsed.from_.email if parsed.from_ else ""
    if sender and is_automated_sender(sender):
        return f"automated sender {sender}"
    own = {a.lower() for a in own_addresses if a}
    if sender and sender.lower() in own:
        return f"sent by one of the CRM's own mailboxes ({sender})"
    if _OUT_OF_OFFICE.search(parsed.subject or ""):
        return "out-of-office subject"
    return None
