"""What one reader may see: every camera, or those of some sites, jurisdictions or named
cameras. API tokens and forwarders share this one definition of "what Polres X may see"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Scope:
    """A set of cameras. Each axis that is not None must match: a scope with sites and
    jurisdictions covers the cameras of those sites that are also in those jurisdictions.
    A camera whose jurisdiction is unknown is covered only by scopes without jurisdictions."""

    sites: frozenset[str] | None = None
    jurisdictions: frozenset[str] | None = None
    cameras: frozenset[str] | None = None  # site/agent/camera

    @classmethod
    def everything(cls) -> Scope:
        return cls()

    @classmethod
    def of(
        cls,
        sites: list[str] | None = None,
        jurisdictions: list[str] | None = None,
        cameras: list[str] | None = None,
    ) -> Scope:
        """A scope from lists as config and CLI give them (None or empty: no restriction)."""
        return cls(
            frozenset(sites) if sites else None,
            frozenset(jurisdictions) if jurisdictions else None,
            frozenset(cameras) if cameras else None,
        )

    @property
    def unrestricted(self) -> bool:
        return self.sites is None and self.jurisdictions is None and self.cameras is None

    def covers_site(self, site: str) -> bool:
        """Whether some camera of `site` may be covered (site-level data such as agents)."""
        return self.sites is None or site in self.sites

    def covers(self, site: str, agent: str, camera: str | None, jurisdiction: str | None) -> bool:
        """Whether this scope covers a camera (or, with camera None, an agent as a whole:
        only scopes without jurisdictions or cameras see an agent's own messages)."""
        if not self.covers_site(site):
            return False
        if camera is None:
            return self.jurisdictions is None and self.cameras is None
        if self.jurisdictions is not None and jurisdiction not in self.jurisdictions:
            return False
        return self.cameras is None or f"{site}/{agent}/{camera}" in self.cameras

    def within(self, other: Scope) -> bool:
        """Whether every camera this scope covers is covered by `other` (each axis `other`
        restricts, this one restricts at least as much): what an admin may hand on."""
        return all(
            theirs is None or (mine is not None and mine <= theirs)
            for mine, theirs in (
                (self.sites, other.sites),
                (self.jurisdictions, other.jurisdictions),
                (self.cameras, other.cameras),
            )
        )

    def to_json(self) -> dict[str, list[str]]:
        """The restricted axes as sorted lists (an unrestricted scope is {})."""
        return {
            name: sorted(values)
            for name, values in (
                ("sites", self.sites),
                ("jurisdictions", self.jurisdictions),
                ("cameras", self.cameras),
            )
            if values is not None
        }

    @classmethod
    def from_json(cls, data: dict[str, list[str]]) -> Scope:
        # Not `of`: an empty list stored here means "nothing", never "no restriction".
        return cls(*(
            None if data.get(name) is None else frozenset(data[name])
            for name in ("sites", "jurisdictions", "cameras")
        ))  # fmt: skip

    def describe(self) -> str:
        parts = [
            f"{name} {','.join(sorted(values))}"
            for name, values in (
                ("sites", self.sites),
                ("jurisdictions", self.jurisdictions),
                ("cameras", self.cameras),
            )
            if values is not None
        ]
        return "; ".join(parts) or "everything"


EVERYTHING: Final = Scope()
