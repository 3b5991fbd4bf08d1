"""Broker identities for agents and central workers, written as a Mosquitto dynamic-security
file: each agent may publish only under its own `pantau/v1/{site}/{agent}/#` and subscribe only
to its own ack topic; only central workers may join central's shared subscription.

Why dynamic security and not `password_file` + `acl_file`: with Mosquitto 2.0's ACL file any
authenticated client may subscribe to `$share/central/...` (there is no subscribe-only deny),
joins central's group, and the broker then silently drops the share it may not read
(tests/datapath/test_credentials.py shows both). Dynamic security checks subscriptions
separately and denies them by default.

The file is read when Mosquitto starts: restart the broker after a change.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import secrets
from pathlib import Path
from typing import Any

from pantau.agent.wire.errors import PantauError
from pantau.agent.wire.protocol import (
    EVIDENCE_KIND,
    TOPIC_ROOT,
    ProtocolError,
    check_segment,
    evidence_request_topic,
)

# PBKDF2-SHA512 as Mosquitto's dynamic-security plugin stores it (salt and hash in base64).
HASH_ITERATIONS = 100_000
SALT_BYTES = 12
CENTRAL_ROLE = "central/{group}"
AGENT_ROLE = "agent/{site}/{agent}"  # "/" cannot occur in a segment: no two names collide


class CredentialsError(PantauError):
    """A credentials file or identity that cannot be used; the message says which."""


def _hash(password: str, salt: bytes, iterations: int) -> str:
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return base64.b64encode(digest).decode()


def new_password() -> str:
    return secrets.token_urlsafe(24)


def parse_agent(name: str) -> tuple[str, str]:
    """`SITE/AGENT` -> (site, agent), each a valid topic segment."""
    site, sep, agent = name.partition("/")
    try:
        if not sep:
            raise ProtocolError(f"{name!r} is not SITE/AGENT")
        return check_segment(site, "site"), check_segment(agent, "agent")
    except ProtocolError as exc:
        raise CredentialsError(exc.reason) from None


def _acl(kind: str, topic: str) -> dict[str, Any]:
    return {"acltype": kind, "topic": topic, "priority": 0, "allow": True}


class DynsecFile:
    """The dynamic-security JSON file: clients (user names with hashed passwords) and roles."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.exists():
            try:
                self.data = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise CredentialsError(f"{path}: not a readable credentials file: {exc}") from None
            if not isinstance(self.data, dict) or "clients" not in self.data:
                raise CredentialsError(f"{path}: not a Mosquitto dynamic-security file")
        else:
            # Everything not granted is denied, except receiving what one may subscribe to.
            self.data = {
                "defaultACLAccess": {
                    "publishClientSend": False,
                    "publishClientReceive": True,
                    "subscribe": False,
                    "unsubscribe": True,
                },
                "clients": [],
                "groups": [],
                "roles": [],
            }

    def users(self) -> list[str]:
        return sorted(c["username"] for c in self.data["clients"])

    def _put(self, user: str, password: str, role: str, acls: list[dict[str, Any]]) -> None:
        if user in self.users():
            raise CredentialsError(f"{self.path}: user {user!r} exists (remove it first)")
        salt = secrets.token_bytes(SALT_BYTES)
        self.data["clients"].append({
            "username": user,
            "roles": [{"rolename": role}],
            "password": _hash(password, salt, HASH_ITERATIONS),
            "salt": base64.b64encode(salt).decode(),
            "iterations": HASH_ITERATIONS,
        })
        self.data["roles"] = [r for r in self.data["roles"] if r["rolename"] != role]
        self.data["roles"].append({"rolename": role, "acls": acls})

    def add_agent(self, name: str, password: str) -> str:
        """Add agent `SITE/AGENT`; returns its broker user name (the same string)."""
        site, agent = parse_agent(name)
        own = f"{TOPIC_ROOT}/{site}/{agent}"
        self._put(
            f"{site}/{agent}",
            password,
            AGENT_ROLE.format(site=site, agent=agent),
            # Its own tree includes where it answers evidence requests (.../evidence/response/X).
            [_acl("publishClientSend", f"{own}/#"), _acl("subscribeLiteral", f"{own}/ack"),
             _acl("subscribeLiteral", evidence_request_topic(site, agent))],
        )
        return f"{site}/{agent}"

    def add_central(self, user: str, password: str, group: str = "central") -> str:
        """Add a central worker that may join `$share/{group}/...` and send acks."""
        try:
            check_segment(user, "user")
            check_segment(group, "group")
        except ProtocolError as exc:
            raise CredentialsError(exc.reason) from None
        self._put(
            user,
            password,
            CENTRAL_ROLE.format(group=group),
            [
                _acl("subscribePattern", f"$share/{group}/{TOPIC_ROOT}/#"),
                _acl("publishClientSend", f"{TOPIC_ROOT}/+/+/ack"),
                # Evidence on request: central asks any agent and reads its answers.
                _acl("publishClientSend", f"{TOPIC_ROOT}/+/+/{EVIDENCE_KIND}/request"),
                _acl("subscribePattern", f"{TOPIC_ROOT}/+/+/{EVIDENCE_KIND}/response/#"),
            ],
        )
        return user

    def remove(self, user: str) -> None:
        if user not in self.users():
            raise CredentialsError(f"{self.path}: no user {user!r}")
        self.data["clients"] = [c for c in self.data["clients"] if c["username"] != user]
        used = {r["rolename"] for c in self.data["clients"] for r in c["roles"]}
        self.data["roles"] = [r for r in self.data["roles"] if r["rolename"] in used]

    def save(self) -> None:
        """Write atomically, readable only by its owner, since it holds password hashes. The
        owner stays what it was; a new file written by root goes to the `mosquitto` user, as
        the broker reads it after dropping its privileges."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        owner = _owner(self.path)
        if owner is not None and os.geteuid() == 0:
            os.chown(tmp, *owner)
        tmp.replace(self.path)


def _owner(path: Path) -> tuple[int, int] | None:
    if path.exists():
        st = path.stat()
        return st.st_uid, st.st_gid
    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:
        return None
    return user.pw_uid, user.pw_gid
