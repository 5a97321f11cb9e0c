"""The SQL the facts of a request are read with (facts.py): one row shape, two ways in.

`KEY_CHAIN_SQL` starts from a secret's hash; `PRINCIPAL_SQL` from the ids a gateway asserts
(identity.py) and returns the same columns, so one assembly serves both. `NAMED_SQL` reads the
end user and tags a request names, and their budgets: a part of the facts of its own, cached per
entity (facts.py), so that a request whose key chain is cached and whose end user is new reads
only that.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, String, bindparam, text

from .tables import UtcDateTime

__all__ = ["KEY_CHAIN_SQL", "PRINCIPAL_SQL", "NAMED_SQL"]


KEY_CHAIN_SQL = text(
    """
    SELECT k.id AS k_id, k.user_id AS k_user, k.team_id AS k_team, k.blocked AS k_blocked,
           k.expires_at AS k_expires, k.models AS k_models,
           u.id AS u_id, u.org_id AS u_org, u.blocked AS u_blocked,
           t.id AS t_id, t.org_id AS t_org, t.blocked AS t_blocked,
           m.team_id AS m_team, m.blocked AS m_blocked,
           o.id AS o_id, o.blocked AS o_blocked,
           b.id AS b_id, b.entity_type AS b_type, b.entity_id AS b_entity, b.max_budget AS b_max,
           b.soft_budget AS b_soft, b.duration AS b_duration, b.reset AS b_reset, b.set_at AS b_set_at
    FROM keys k
    LEFT JOIN users u ON u.id = k.user_id
    LEFT JOIN teams t ON t.id = k.team_id
    LEFT JOIN team_members m ON m.team_id = k.team_id AND m.user_id = k.user_id
    LEFT JOIN orgs o ON o.id = t.org_id OR o.id = u.org_id
    LEFT JOIN budgets b ON
           (b.entity_type = 'key' AND b.entity_id = k.id)
        OR (b.entity_type = 'key_model' AND b.entity_id = k.id || '/' || :model)
        OR (b.entity_type = 'user' AND b.entity_id = k.user_id)
        OR (b.entity_type = 'team' AND b.entity_id = k.team_id)
        OR (b.entity_type = 'team_member' AND b.entity_id = k.team_id || '/' || k.user_id)
        OR (b.entity_type = 'org' AND b.entity_id = o.id)
    WHERE k.key_hash = :key_hash AND k.deleted_at IS NULL
    """
).columns(
    k_blocked=Boolean, k_expires=UtcDateTime, k_models=JSON, u_blocked=Boolean, t_blocked=Boolean,
    m_blocked=Boolean, o_blocked=Boolean, b_set_at=UtcDateTime,
)


#: The same row shape as the key chain, by asserted ids. One row even when nothing exists yet
#: (`k_exists` tells a deleted key from one never seen); k_user/k_team/u_org/t_org are asserted.
PRINCIPAL_SQL = text(
    """
    SELECT k.id AS k_id, CAST(:user AS VARCHAR(200)) AS k_user, CAST(:team AS VARCHAR(200)) AS k_team,
           k.blocked AS k_blocked, k.expires_at AS k_expires, k.models AS k_models,
           (SELECT COUNT(*) FROM keys x WHERE x.id = :key) AS k_exists,
           u.id AS u_id, COALESCE(:user_org, u.org_id) AS u_org, u.blocked AS u_blocked,
           t.id AS t_id, COALESCE(:team_org, t.org_id) AS t_org, t.blocked AS t_blocked,
           m.team_id AS m_team, m.blocked AS m_blocked,
           o.id AS o_id, o.blocked AS o_blocked,
           b.id AS b_id, b.entity_type AS b_type, b.entity_id AS b_entity, b.max_budget AS b_max,
           b.soft_budget AS b_soft, b.duration AS b_duration, b.reset AS b_reset, b.set_at AS b_set_at
    FROM (SELECT 1 AS one) base
    LEFT JOIN keys k ON k.id = :key AND k.deleted_at IS NULL
    LEFT JOIN users u ON u.id = :user
    LEFT JOIN teams t ON t.id = :team
    LEFT JOIN team_members m ON m.team_id = :team AND m.user_id = :user
    LEFT JOIN orgs o ON o.id = :org OR o.id = COALESCE(:team_org, t.org_id) OR o.id = COALESCE(:user_org, u.org_id)
    LEFT JOIN budgets b ON
           (b.entity_type = 'key' AND b.entity_id = k.id)
        OR (b.entity_type = 'key_model' AND b.entity_id = k.id || '/' || :model)
        OR (b.entity_type = 'user' AND b.entity_id = u.id)
        OR (b.entity_type = 'team' AND b.entity_id = t.id)
        OR (b.entity_type = 'team_member' AND b.entity_id = m.team_id || '/' || m.user_id)
        OR (b.entity_type = 'org' AND b.entity_id = o.id)
    """
).columns(
    k_blocked=Boolean, k_expires=UtcDateTime, k_models=JSON, u_blocked=Boolean, t_blocked=Boolean,
    m_blocked=Boolean, o_blocked=Boolean, b_set_at=UtcDateTime,
)


#: The budgets of the named end user and tags (kind and id of the budget's entity; blocked null), then
#: a row for each of those that exists (b_id null): a budget may name an end user or tag never created.
#: The budgets come first so that PostgreSQL types the union's columns from theirs.
NAMED_SQL = text(
    """
    SELECT entity_type AS kind, entity_id AS id, NULL AS blocked, id AS b_id, max_budget AS b_max,
           soft_budget AS b_soft, duration AS b_duration, reset AS b_reset, set_at AS b_set_at
    FROM budgets
    WHERE (entity_type = 'end_user' AND entity_id = :end_user) OR (entity_type = 'tag' AND entity_id IN :tags)
    UNION ALL
    SELECT 'end_user', id, blocked, NULL, NULL, NULL, NULL, NULL, NULL FROM end_users WHERE id = :end_user
    UNION ALL
    SELECT 'tag', id, blocked, NULL, NULL, NULL, NULL, NULL, NULL FROM tags WHERE id IN :tags
    """
).bindparams(bindparam("tags", expanding=True, type_=String)).columns(blocked=Boolean, b_set_at=UtcDateTime)
