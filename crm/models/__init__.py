from __future__ import annotations

from crm.models.access import (
    FieldPermission,
    Group,
    ModulePermission,
    Profile,
    Role,
    SharingRule,
    User,
)
from crm.models.changelog import ChangeLog
from crm.models.comments import Comment
from crm.models.documents import Document, DocumentLink
from crm.models.mail import (
    EmailTemplate,
    MailCopy,
    MailOpen,
    OutgoingMail,
    OutgoingMailSettings,
    SmtpSecurity,
    SmtpSettings,
)
from crm.models.messages import Attachment, Message, MessageLink, QuarantinedMessage
from crm.models.modules import Field, Module
from crm.models.records import Record, RecordAddress, RecordReference

__all__ = [
    "Attachment",
    "ChangeLog",
    "Comment",
    "Document",
    "DocumentLink",
    "EmailTemplate",
    "Field",
    "FieldPermission",
    "Group",
    "MailCopy",
    "MailOpen",
    "Message",
    "MessageLink",
    "Module",
    "ModulePermission",
    "OutgoingMail",
    "OutgoingMailSettings",
    "Profile",
    "QuarantinedMessage",
    "Record",
    "RecordAddress",
    "RecordReference",
    "Role",
    "SharingRule",
    "SmtpSecurity",
    "SmtpSettings",
    "User",
]
