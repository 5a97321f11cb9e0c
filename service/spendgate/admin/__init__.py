"""The admin half of API.md: orgs, teams, users, memberships, keys, end users and tags.

`schemas` holds the request/response models; `entities`, `deletion`, `keys` and `members`
the services (keyword-only async functions); `ledger_view` how responses show ledgers;
`lists` the paged lists (`cursor` their cursors); `audit` what every change records in its own
transaction and `audit_query` how the trail is read.
"""

from . import deletion, entities, keys, members, schemas
from .entities import END_USER, ORG, TAG, TEAM, USER, EntityKind

__all__ = ["schemas", "entities", "deletion", "keys", "members", "EntityKind", "ORG", "TEAM", "USER", "END_USER", "TAG"]
