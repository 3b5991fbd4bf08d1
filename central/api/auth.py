"""Bearer tokens on every request: 401 without a live token, 403 for a role too low; the
caller's Token (its role and Scope) for the endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pantau.central.tokens import Token

bearer = HTTPBearer(auto_error=False, description="A token from `pantau-central tokens create`.")
UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Token:
    """The live token the request carries, or 401."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "an API token is needed: Authorization: Bearer TOKEN",
                            headers=UNAUTHORIZED)  # fmt: skip
    token = request.app.state.storages.get().token(credentials.credentials)
    if token is None:
        raise HTTPException(401, "unknown or revoked token", headers=UNAUTHORIZED)
    return token


def role(needed: str) -> Callable[[Token], Token]:
    """A dependency: the caller's token if its role includes `needed`, else 403."""

    def check(token: Annotated[Token, Depends(caller)]) -> Token:
        if not token.may(needed):
            raise HTTPException(403, f"token {token.name!r} is a {token.role}; this needs "
                                f"{needed} or above")  # fmt: skip
        return token

    return check


Viewer = Annotated[Token, Depends(role("viewer"))]
Operator = Annotated[Token, Depends(role("operator"))]
Admin = Annotated[Token, Depends(role("admin"))]
