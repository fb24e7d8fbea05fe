"""The catalogue of OAuth scopes an application may be allowed.

Usage-metering scopes also have a short form (`read:meters` for
`usage-metering:read:meters`), as in the API reference; either satisfies an endpoint.
"""

from __future__ import annotations

from collections.abc import Iterable

SCOPES: dict[str, str] = {}

for _action in ("create", "read", "update", "delete"):
    for _resource, _label in (("meter_types", "meter types"), ("meters", "meters")):
        SCOPES[f"usage-metering:{_action}:{_resource}"] = f"{_action.capitalize()} {_label}"
for _action in ("create", "read", "update", "delete", "ingest"):
    SCOPES[f"online-collection:{_action}:collectors"] = (
        "Send data to collectors" if _action == "ingest" else f"{_action.capitalize()} collectors"
    )
SCOPES["stream-management:read:streams"] = "Read and export streams"
SCOPES["stream-management:write:streams"] = "Import streams"
SCOPES["aggregation:read:sessions"] = "Look up aggregation sessions"
for _action in ("create", "read", "update", "delete"):
    SCOPES[f"global-parameters:{_action}:parameters"] = f"{_action.capitalize()} global parameters"
SCOPES["metrics:read"] = "Query metrics and read metric definitions"
SCOPES["metrics:write"] = "Create, change and delete metric definitions"

# Short form -> full name.
ALIASES: dict[str, str] = {
    name.removeprefix("usage-metering:"): name
    for name in SCOPES
    if name.startswith("usage-metering:")
}
FULL_TO_ALIAS: dict[str, str] = {full: short for short, full in ALIASES.items()}

ALL_SCOPES: tuple[str, ...] = tuple(SCOPES)


class UnknownScopeError(ValueError):
    def __init__(self, names: Iterable[str]) -> None:
        self.names = sorted(names)
        super().__init__(f"Unknown scope(s): {', '.join(self.names)}.")


def normalize_scopes(names: Iterable[str]) -> list[str]:
    """Full names for `names` (short forms expanded), in catalogue order, without repeats."""
    wanted = {ALIASES.get(name, name) for name in names}
    unknown = wanted - set(SCOPES)
    if unknown:
        raise UnknownScopeError(unknown)
    return [name for name in SCOPES if name in wanted]


def with_aliases(names: Iterable[str]) -> list[str]:
    """`names` plus the short form of each, as a token may be asked for either."""
    result = list(names)
    result.extend(FULL_TO_ALIAS[name] for name in list(result) if name in FULL_TO_ALIAS)
    return result


def scope_granted(required: str, granted: Iterable[str]) -> bool:
    granted = set(granted)
    return required in granted or FULL_TO_ALIAS.get(required) in granted
