"""Encryption at rest for sensitive parameter values.

Keys come from TALLY_PARAMETER_KEYS (comma-separated Fernet keys); the first encrypts,
all decrypt. Every ciphertext is stored beside the id of the key that made it, so a
value whose key was removed fails loudly and by name instead of as a generic error, and
rotation can tell which rows still need re-encrypting.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class ParameterDecryptionError(Exception):
    """A stored ciphertext could not be decrypted; its value is never guessed at."""


def key_id_for(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()[:16]


@dataclass(frozen=True)
class Keyring:
    # (key id, Fernet) pairs; the first encrypts.
    keys: tuple[tuple[str, Fernet], ...]

    @property
    def primary_id(self) -> str:
        return self.keys[0][0]

    def encrypt(self, plaintext: str) -> tuple[str, str]:
        key_id, fernet = self.keys[0]
        return key_id, fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, key_id: str, ciphertext: str) -> str:
        fernet = dict(self.keys).get(key_id)
        if fernet is None:
            raise ParameterDecryptionError(
                f"The value was encrypted with key {key_id}, which is not in TALLY_PARAMETER_KEYS."
            )
        try:
            return fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError, ValueError):
            raise ParameterDecryptionError(
                f"The stored value does not decrypt with key {key_id}: it is corrupted."
            ) from None


def build_keyring(raw_keys: list[str]) -> Keyring:
    if not raw_keys:
        raise ImproperlyConfigured(
            "TALLY_PARAMETER_KEYS is empty: sensitive parameters need at least one Fernet "
            "key (generate one with `python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'`)."
        )
    keys = []
    for position, raw in enumerate(raw_keys, start=1):
        try:
            keys.append((key_id_for(raw), Fernet(raw.encode("ascii"))))
        except (ValueError, UnicodeError):
            raise ImproperlyConfigured(
                f"TALLY_PARAMETER_KEYS key #{position} is not a valid Fernet key "
                "(32 url-safe base64-encoded bytes)."
            ) from None
    return Keyring(tuple(keys))


@lru_cache(maxsize=4)
def _keyring_for(raw_keys: tuple[str, ...]) -> Keyring:
    return build_keyring(list(raw_keys))


def keyring() -> Keyring:
    """The keyring from settings (rebuilt when the configured keys change)."""
    return _keyring_for(tuple(settings.TALLY["PARAMETER_KEYS"]))
