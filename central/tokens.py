"""API tokens: a name, a role (viewer < operator < admin) and a Scope; the secret is shown once
and only its SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, Final

from pantau.agent.wire.errors import PantauError
from pantau.central.scope import Scope

# Each role may do what the ones before it may: viewer reads, operator also acknowledges
# alerts, admin also manages tokens.
ROLES: Final = ("viewer", "operator", "admin")
PREFIX: Final = "pantau_"


class TokenError(PantauError):
    """A token that cannot be created, found or revoked; the message says which and why."""


def new_secret() -> str:
    """A fresh token: 256 random bits, recognisable by its prefix in a leaked log."""
    return PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """What is stored of a token: its SHA-256, hex. A random 256-bit secret needs no salt or
    slow hash: nothing smaller than the secret itself can be guessed."""
    return hashlib.sha256(secret.encode()).hexdigest()


def check_role(role: str) -> str:
    if role not in ROLES:
        raise TokenError(f"role {role!r}: one of {', '.join(ROLES)}")
    return role


@dataclass(frozen=True)
class Token:
    """A stored token, without its secret."""

    name: str
    role: str
    scope: Scope
    created_at: str
    created_by: str | None = None
    revoked_at: str | None = None

    def may(self, role: str) -> bool:
        """Whether this token's role includes `role`'s rights."""
        return ROLES.index(self.role) >= ROLES.index(role)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "scope": self.scope.to_json(),
            "created_at": self.created_at,
            "created_by": self.created_by,
            "revoked_at": self.revoked_at,
        }
