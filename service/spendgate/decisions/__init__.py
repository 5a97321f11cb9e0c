"""The decision path: authorize and record (API.md "Decision routes")."""

from .authorize import authorize
from .models import AuthorizeRequest, RecordRequest
from .record import record

__all__ = ["authorize", "record", "AuthorizeRequest", "RecordRequest"]
