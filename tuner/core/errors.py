"""The one exception tree of the tuner.

Every error the tuner raises on purpose derives from :class:`TunerError`; lower-layer
exceptions (docker, sqlalchemy, aiohttp, OS errors) are translated where they enter.
Messages say what is wrong *and* what to do, naming the file, field or flag at fault.

    TunerError
    ├── ConfigError          a search-space file, workload or CLI option is wrong
    │   └── UnknownFlagError the engine (version/image) does not accept a flag
    ├── LaunchError          a server could not be started (missing image, busy port, no daemon)
    ├── ServerCrash          a started server died, hung or failed: carries a Failure
    └── StorageError         the study database is unreachable, too new, or failed mid-write
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tuner.core.failures import Failure


class TunerError(Exception):
    """Root of every error the tuner raises on purpose."""


class ConfigError(TunerError):
    """A search-space file, workload or command-line option is invalid.

    ``source`` names the file (or option) and ``field`` the dotted path inside it.
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None) -> None:
        where = ": ".join(p for p in (source, field) if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.message = message  # without the source and field
        self.source = source
        self.field = field


class UnknownFlagError(ConfigError):
    """One or more flags are not accepted by the engine version or image."""

    def __init__(
        self,
        flags: list[str],
        *,
        engine: str,
        version: str,
        source: str | None = None,
        suggestions: dict[str, str] | None = None,
    ) -> None:
        self.flags = sorted(set(flags))
        self.suggestions = suggestions or {}
        named = ", ".join(
            f"{f} (did you mean {self.suggestions[f]}?)" if f in self.suggestions else f for f in self.flags
        )
        super().__init__(
            f"{engine} {version} does not accept {named}; remove or translate "
            f"{'it' if len(self.flags) == 1 else 'them'} in the search space",
            source=source,
        )


class LaunchError(TunerError):
    """The server could not be started at all (not a crash of a started server)."""


class ServerCrash(TunerError):
    """A started server died, hung or failed every request. ``failure`` holds the evidence."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.kind.value}: {failure.summary()}")
        self.failure = failure


class StorageError(TunerError):
    """The study database is unreachable, of a newer schema, or failed mid-write."""
