"""API tokens: `pantau-central tokens create` prints the secret once, alone on standard output,
and stores only its SHA-256; list shows no secrets; revoke stops it at once. Plus the scope
rules that tokens rely on (what an admin may hand on, stored scopes never widen)."""

from __future__ import annotations

import hashlib
import json

import pytest
from pantau.central.scope import Scope
from pantau.central.storage import Storage
from pantau.central.tokens import TokenError

from tests.conftest import cli
from tests.datapath.conftest import write_central_config


def test_tokens_cli_prints_once_and_stores_only_a_hash(tmp_path):
    db = tmp_path / "central.db"
    config = str(write_central_config(tmp_path, 1883, f"sqlite:///{db}"))
    res = cli(
        "pantau-central",
        "tokens",
        "create",
        "-c",
        config,
        "--name",
        "polres-balikpapan",
        "--role",
        "operator",
        "--jurisdictions",
        "polres-balikpapan,polres-ppu",
    )
    assert res.returncode == 0, res.stderr
    secret = res.stdout.strip()
    assert res.stdout == secret + "\n" and secret.startswith("pantau_") and len(secret) > 40
    assert "shown once" in res.stderr and secret not in res.stderr
    # Only the hash is in the database (the WAL and its index included).
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("central.db*"))
    assert secret.encode() not in stored
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored
    st = Storage(f"sqlite:///{db}")
    token = st.token(secret)
    assert token is not None and token.role == "operator"
    assert token.scope == Scope.of(jurisdictions=["polres-balikpapan", "polres-ppu"])
    st.close()

    res = cli("pantau-central", "tokens", "list", "-c", config, "--format", "json")
    (listed,) = json.loads(res.stdout)
    assert listed["name"] == "polres-balikpapan" and secret not in res.stdout
    assert listed["scope"] == {"jurisdictions": ["polres-balikpapan", "polres-ppu"]}
    res = cli("pantau-central", "tokens", "list", "-c", config)
    assert "jurisdictions polres-balikpapan,polres-ppu" in res.stdout

    res = cli(
        "pantau-central",
        "tokens",
        "create",
        "-c",
        config,
        "--name",
        "polres-balikpapan",
        "--role",
        "viewer",
        "--all",
    )
    assert res.returncode == 2 and "exists already" in res.stderr and res.stdout == ""
    res = cli("pantau-central", "tokens", "revoke", "polres-balikpapan", "-c", config)
    assert res.returncode == 0, res.stderr
    st = Storage(f"sqlite:///{db}")
    assert st.token(secret) is None and st.tokens()[0].revoked_at is not None
    st.close()
    res = cli("pantau-central", "tokens", "revoke", "polres-balikpapan", "-c", config)
    assert res.returncode == 2 and "no live token" in res.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "give the token's scope"),
        (["--all", "--sites", "s1"], "give the token's scope"),
        (["--sites", ","], "at least one name"),
    ],
)
def test_tokens_cli_needs_a_scope(tmp_path, args, says):
    config = str(write_central_config(tmp_path, 1883, f"sqlite:///{tmp_path}/c.db"))
    res = cli(
        "pantau-central", "tokens", "create", "-c", config, "--name", "x", "--role", "viewer", *args
    )
    assert res.returncode == 2 and says in res.stderr and res.stdout == ""


def test_token_storage_rules(new_storage):
    st = new_storage()
    with pytest.raises(TokenError, match="token name"):
        st.add_token("a b", "viewer", Scope())
    with pytest.raises(TokenError, match="role"):
        st.add_token("x", "root", Scope())
    # A name is free again once its token is revoked.
    first = st.add_token("x", "viewer", Scope.of(sites=["s1"]))
    st.revoke_token("x")
    second = st.add_token("x", "admin", Scope())
    assert st.token(first) is None and st.token(second).role == "admin"
    assert [t.revoked_at is None for t in st.tokens()] == [False, True]
    assert st.token("pantau_guess") is None


def test_scope_within_and_stored_form():
    polda = Scope.of(jurisdictions=["polres-a", "polres-b"])
    assert Scope.of(jurisdictions=["polres-a"]).within(polda)
    assert Scope.of(jurisdictions=["polres-a"], sites=["s1"]).within(polda)
    assert not Scope().within(polda) and not Scope.of(sites=["s1"]).within(polda)
    assert not Scope.of(jurisdictions=["polres-c"]).within(polda)
    assert polda.within(Scope()) and Scope().within(Scope())
    # An empty axis means "nothing", and stays so when stored and read back.
    nothing = Scope(sites=frozenset())
    assert Scope.from_json(nothing.to_json()) == nothing
    assert Scope.from_json(polda.to_json()) == polda and Scope.from_json({}).unrestricted
