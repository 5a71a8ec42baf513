"""Where state lives and what the user chose: data dir plus an optional ``config.toml`` in it.

Example ``config.toml``::

    transcriber = "local"        # the engine used when --transcriber is not given
    index = "sqlite"

    [local]                      # options of the local engine (see builtin/local_whisper.py)
    model = "base"

    [[hints]]                    # per-folder hints: the first whose path prefix matches wins
    path = "~/podcasts/chinese"
    language = "zh"
    prompt = "Names: Wang Fang, Li Lei."
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import safety
from .errors import ConfigError
from .safety import SECRET_NAME
from .backends import normalize_location
from .paths import is_under

DATA_DIR_ENV = "MEDIAINDEX_DATA_DIR"


def default_data_dir() -> Path:
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "mediaindex"


@dataclass
class Config:
    data_dir: Path
    settings: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)  # from CLI flags; win over settings

    @classmethod
    def load(cls, data_dir: str | Path | None = None, **overrides: Any) -> "Config":
        d = Path(data_dir).expanduser() if data_dir else default_data_dir()
        d = d.absolute()
        settings: dict[str, Any] = {}
        f = d / "config.toml"
        if f.exists():
            try:
                settings = tomllib.loads(f.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{f}: not valid TOML: {e}") from None
            except UnicodeDecodeError as e:
                raise ConfigError(f"{f}: not valid TOML: not UTF-8 text ({e.reason} at byte {e.start})") from None
            except OSError as e:
                raise ConfigError(f"{f}: cannot read it: {e.strerror or e}") from None
        return cls(data_dir=d, settings=settings, overrides={k: v for k, v in overrides.items() if v is not None})

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.overrides:
            return self.overrides[key]
        return self.settings.get(key, default)

    def section(self, name: str) -> dict[str, Any]:
        """A plugin's own table of settings (``[local]``, ``[dashscope]``...), with CLI overrides."""
        out = dict(self.settings.get(name) or {})
        out.update(self.overrides.get(name) or {})
        return out

    def hint_for(self, path: str) -> dict[str, Any]:
        """The language/prompt hint for a file: the first ``[[hints]]`` entry whose path contains it."""
        for hint in self.settings.get("hints") or []:
            prefix = normalize_location(hint.get("path", ""))
            if is_under(path, prefix):
                return {k: v for k, v in hint.items() if k != "path"}
        return {}

    def __post_init__(self) -> None:
        self._register_secrets()

    def _register_secrets(self) -> None:
        """Every credential this config knows is redacted from all this process prints or stores."""
        safety.add_env_secrets()
        for value in self._named_secrets():
            safety.add_secret(value)

    def secret(self, section: str, key: str, env: str | None = None) -> str | None:
        """A credential: the environment variable ``env`` wins over ``[section] key`` in the file.

        Whatever it returns is redacted from every text that leaves the process from then on."""
        if env and os.environ.get(env):
            value = os.environ[env]
        else:
            found = self.section(section).get(key)
            value = str(found) if found else None
        safety.add_secret(value)
        return value

    def _named_secrets(self) -> set[str]:
        """Config values under a secret-looking name (``api_key``, ``[x.credentials]``...)."""
        found: set[str] = set()

        def walk(table: Any, secret: bool) -> None:
            if isinstance(table, dict):
                for k, v in table.items():
                    walk(v, secret or bool(SECRET_NAME.search(str(k))))
            elif isinstance(table, list):
                for item in table:
                    walk(item, secret)
            elif secret and isinstance(table, (str, int)) and not isinstance(table, bool):
                found.add(str(table))

        walk(self.settings, False)
        walk(self.overrides, False)
        return found

    def secret_values(self) -> list[str]:
        """Every credential known to this process (environment, config, ``secret()``), longest first."""
        self._register_secrets()
        return safety.secret_values()

    def redact(self, text: str) -> str:
        """Text with every credential replaced by ***: for errors that get stored or shown."""
        self._register_secrets()
        return safety.redact(text)

    def __repr__(self) -> str:  # never print settings: they may hold credentials
        return f"Config(data_dir={str(self.data_dir)!r}, sections={sorted(k for k, v in self.settings.items() if isinstance(v, dict))})"

    @property
    def state_path(self) -> Path:
        return self.data_dir / "state.sqlite3"

    def ensure_data_dir(self) -> Path:
        """Create the data dir; raises ValueError (a usage error) when it cannot be."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the data dir {self.data_dir}: {e.strerror or e} "
                             "(choose another with --data-dir or MEDIAINDEX_DATA_DIR)") from None
        return self.data_dir
