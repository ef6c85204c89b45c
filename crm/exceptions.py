"""The only errors services raise; one handler per front end maps them to responses."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    code = "error"

    def __init__(self, detail: str = "", *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        self.extra = extra


class NotFound(ServiceError):
    """The object does not exist, or the actor may not see it: the two look the same."""

    code = "not_found"


class Forbidden(ServiceError):
    """The actor sees the object but may not do this to it."""

    code = "forbidden"


class Invalid(ServiceError):
    """Input the service refuses; `fields` maps field names to messages."""

    code = "validation_error"

    def __init__(self, detail: str = "", *, fields: dict[str, str] | None = None, **kw: Any):
        super().__init__(detail or "; ".join(f"{k}: {v}" for k, v in (fields or {}).items()), **kw)
        self.fields = fields or {}


class Conflict(ServiceError):
    code = "conflict"
