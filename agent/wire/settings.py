"""Settings machinery shared by agent and central: YAML file + PANTAU_ env overrides, the broker
section, and config errors reported as `field.path: value -> reason` lines.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pantau.agent.wire.errors import PantauError
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

CONFIG_ENV = "PANTAU_CONFIG"
# Query parameters that cameras take credentials in (e.g. /mjpg/video.cgi?user=a&pwd=b).
_SECRET_PARAM = re.compile(r"([?&](?:pass|password|passwd|pwd|token|key|auth)=)[^&#]*", re.I)


def redact_url(url: str) -> str:
    """The URL without secrets, fit to print or log: rtsp://user:pass@host -> user:***@host,
    and the values of password-like query parameters -> ***."""
    head, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        cred, _, host = rest.partition("@")
        user = cred.split(":", 1)[0]
        url = f"{head}://{user}:***@{host}"
    return _SECRET_PARAM.sub(r"\1***", url)


class ConfigError(PantauError):
    """A configuration that cannot be used. `lines` are `field.path: value -> reason`."""

    def __init__(self, lines: list[str], source: str | None = None) -> None:
        self.lines = lines
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"invalid configuration{where}:\n" + "\n".join(f"  {x}" for x in lines))


class Section(BaseModel):
    """A config section: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


class TlsSettings(Section):
    ca: Path | None = Field(None, description="CA certificate (PEM) that signed the broker's.")
    cert: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    key: Path | None = Field(None, description="Private key (PEM) of the client certificate.")
    insecure: bool = Field(False, description="Skip the broker hostname check (lab use only).")

    @model_validator(mode="after")
    def _files_exist(self) -> TlsSettings:
        for name in ("ca", "cert", "key"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} file {str(path)!r} does not exist or is not a file")
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key must be given together")
        return self


class BrokerSettings(Section):
    host: str = Field("127.0.0.1", description="MQTT broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="MQTT broker port (8883 for TLS).")
    username: str | None = Field(None, description="MQTT user name, if the broker wants one.")
    password: SecretStr | None = Field(None, description="MQTT password; better set by env.")
    tls: TlsSettings | None = Field(None, description="TLS settings; omit for plain TCP.")
    keepalive: int = Field(30, ge=5, le=3600, description="MQTT keepalive in seconds.")
    session_expiry: int = Field(
        7 * 86400, ge=0, description="Seconds the broker keeps our session while we are away."
    )
    reconnect_min: float = Field(0.5, gt=0, description="First reconnect delay in seconds.")
    reconnect_max: float = Field(30.0, gt=0, description="Longest reconnect delay in seconds.")


class PantauSettings(BaseSettings):
    """Base of the agent's and central's settings: env (PANTAU_*, `__` nests) beats the file."""

    model_config = SettingsConfigDict(
        env_prefix="PANTAU_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; env must win over it.
        return env_settings, init_settings


S = TypeVar("S", bound=PantauSettings)


def _format_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_errors(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        reason = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            lines.append(f"{loc}: (missing) -> {reason}")
        else:
            lines.append(f"{loc}: {_format_value(value)} -> {reason}")
    return lines


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read -> {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"{path}: byte {exc.start} -> not UTF-8 text (save the file as UTF-8)"]
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}{where}: not valid YAML -> {problem}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: top level -> must be a mapping, got {type(data).__name__}"])
    return data


def load_settings(cls: type[S], path: Path | str | None = None, **overrides: Any) -> S:
    """Build settings from the YAML file (`path`, else $PANTAU_CONFIG), env and overrides."""
    if path is None and os.environ.get(CONFIG_ENV):
        path = os.environ[CONFIG_ENV]
    data = read_yaml(Path(path)) if path else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls(**data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc), str(path) if path else None) from None
