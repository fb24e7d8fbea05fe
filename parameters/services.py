"""Writes and value resolution for global parameters."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from common.errors import ServiceConflict
from parameters.crypto import keyring
from parameters.models import Parameter
from parameters.rules import MAX_PARAMETERS_PER_OPERATOR
from tenants.models import Operator


class ParameterConflict(ServiceConflict):
    """The write would break a uniqueness or quota rule (answered as 409)."""


class ParameterNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"No parameter named {name!r}.")
        self.name = name


def parameter_set_value(parameter: Parameter, value: str) -> None:
    """Put `value` on the (unsaved) parameter: encrypted when sensitive."""
    if parameter.is_sensitive:
        parameter.key_id, parameter.encrypted_value = keyring().encrypt(value)
        parameter.plain_value = ""
    else:
        parameter.plain_value = value
        parameter.key_id = parameter.encrypted_value = ""


def parameter_create(
    *, operator: Operator, name: str, type: str, value: str, description: str = ""
) -> Parameter:
    """Create a parameter; a duplicate name or the 101st parameter is a ParameterConflict."""
    parameter = Parameter(operator=operator, name=name, type=type, description=description)
    parameter_set_value(parameter, value)
    with transaction.atomic():
        # The operator row serialises concurrent creates, so the quota cannot be overrun.
        Operator.objects.select_for_update().filter(pk=operator.pk).first()
        if Parameter.objects.filter(operator=operator).count() >= MAX_PARAMETERS_PER_OPERATOR:
            raise ParameterConflict(
                f"An operator may have at most {MAX_PARAMETERS_PER_OPERATOR} parameters."
            )
        try:
            with transaction.atomic():
                parameter.save(force_insert=True)
        except IntegrityError:
            raise ParameterConflict(f"A parameter named {name!r} already exists.") from None
    return parameter


def parameter_update(
    *, parameter: Parameter, value: str | None = None, description: str | None = None
) -> Parameter:
    """Change the value, the description or both; the type never changes."""
    fields = ["updated_at"]
    if value is not None:
        parameter_set_value(parameter, value)
        fields += ["plain_value", "encrypted_value", "key_id"]
    if description is not None:
        parameter.description = description
        fields.append("description")
    parameter.updated_at = timezone.now()
    parameter.save(update_fields=fields)
    return parameter


@dataclass(frozen=True)
class BulkDeleteResult:
    deleted: list[str]
    invalid: list[str]


def parameters_delete(*, operator: Operator, names: Iterable[str]) -> BulkDeleteResult:
    """Delete the named parameters of `operator`. Names it does not have are reported as
    invalid and touch nothing, including another operator's parameters of that name."""
    wanted = list(dict.fromkeys(names))
    with transaction.atomic():
        existing = set(
            Parameter.objects.select_for_update()
            .filter(operator=operator, name__in=wanted)
            .values_list("name", flat=True)
        )
        Parameter.objects.filter(operator=operator, name__in=existing).delete()
    return BulkDeleteResult(
        deleted=[name for name in wanted if name in existing],
        invalid=[name for name in wanted if name not in existing],
    )


def parameter_value(parameter: Parameter) -> str:
    """The real value, decrypted when sensitive (ParameterDecryptionError if it cannot be)."""
    if parameter.is_sensitive:
        return keyring().decrypt(parameter.key_id, parameter.encrypted_value)
    return parameter.plain_value


def parameter_resolve(operator: Operator, name: str) -> str:
    """The value of `operator`'s parameter `name`, for stream nodes at run time."""
    parameter = Parameter.objects.filter(operator=operator, name=name).first()
    if parameter is None:
        raise ParameterNotFound(name)
    return parameter_value(parameter)


REFERENCE = re.compile(r"\{\{param:([\w.-]+(?:/[\w.-]+)*)\}\}", re.ASCII)


def parameters_substitute(operator: Operator, config: Any) -> Any:
    """A copy of the JSON-like `config` with every `{{param:name}}` replaced by its value.

    References may stand alone or inside longer strings, in values (not keys). All
    referenced parameters are read in one query; a missing one raises ParameterNotFound.
    """
    names = set(_references(config))
    if not names:
        return config
    found = {
        parameter.name: parameter
        for parameter in Parameter.objects.filter(operator=operator, name__in=names)
    }
    missing = sorted(names - set(found))
    if missing:
        raise ParameterNotFound(missing[0])
    values = {name: parameter_value(parameter) for name, parameter in found.items()}
    return _replace(config, values)


def _references(node: Any) -> Iterable[str]:
    if isinstance(node, str):
        yield from REFERENCE.findall(node)
    elif isinstance(node, dict):
        for item in node.values():
            yield from _references(item)
    elif isinstance(node, list | tuple):
        for item in node:
            yield from _references(item)


def _replace(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, str):
        return REFERENCE.sub(lambda match: values[match.group(1)], node)
    if isinstance(node, dict):
        return {key: _replace(item, values) for key, item in node.items()}
    if isinstance(node, list | tuple):
        return [_replace(item, values) for item in node]
    return node


def parameter_keys_rotate(*, batch_size: int = 500) -> int:
    """Re-encrypt every sensitive value not under the first key; returns rows changed."""
    ring = keyring()
    changed = 0
    while True:
        with transaction.atomic():
            batch = list(
                Parameter.objects.select_for_update()
                .filter(type=Parameter.Type.SENSITIVE)
                .exclude(key_id=ring.primary_id)
                .order_by("pk")[:batch_size]
            )
            if not batch:
                return changed
            for parameter in batch:
                plaintext = ring.decrypt(parameter.key_id, parameter.encrypted_value)
                parameter.key_id, parameter.encrypted_value = ring.encrypt(plaintext)
            Parameter.objects.bulk_update(batch, ["key_id", "encrypted_value"])
            changed += len(batch)
