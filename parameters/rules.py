"""The rules a parameter must follow, shared by the API and the admin forms."""

from __future__ import annotations

import re

NAME_PATTERN = re.compile(r"^[\w.-]+(?:/[\w.-]+)*$", re.ASCII)
NAME_MAX_LENGTH = 900
MAX_DEPTH = 10
VALUE_MAX_LENGTH = 8192
DESCRIPTION_MAX_LENGTH = 1024
MAX_PARAMETERS_PER_OPERATOR = 100


def name_problem(name: str) -> str | None:
    """Why `name` is not a valid parameter name, or None."""
    if not 1 <= len(name) <= NAME_MAX_LENGTH:
        return f"Must be 1 to {NAME_MAX_LENGTH} characters long."
    if not NAME_PATTERN.match(name):
        return (
            "May contain only letters, digits, underscores (_), hyphens (-), periods (.) and "
            "forward slashes (/) between non-empty segments."
        )
    depth = name.count("/") + 1
    if depth > MAX_DEPTH:
        return f"The hierarchy is {depth} levels deep; at most {MAX_DEPTH} are allowed."
    return None


def value_problem(value: str) -> str | None:
    if not 1 <= len(value) <= VALUE_MAX_LENGTH:
        return f"Must be 1 to {VALUE_MAX_LENGTH} characters long."
    return None
