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
from crm.models.modules import Field, Module
from crm.models.records import Record, RecordAddress

__all__ = [
    "ChangeLog",
    "Comment",
    "Field",
    "FieldPermission",
    "Group",
    "Module",
    "ModulePermission",
    "Profile",
    "Record",
    "RecordAddress",
    "Role",
    "SharingRule",
    "User",
]
