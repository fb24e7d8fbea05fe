from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from tenants.models import Operator

MASK = "********"


class Parameter(models.Model):
    """A named value an operator's streams can reference as `{{param:name}}`.

    Names form a hierarchy with `/` (`credentials/payment-gateway/api-key`). A standard
    value is stored as written; a sensitive one only as ciphertext, beside the id of the
    key that encrypted it, and is never returned by the API or shown in the admin.
    """

    class Type(models.TextChoices):
        STANDARD = "standard", "Standard"
        SENSITIVE = "sensitive", "Sensitive"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="parameters")
    name = models.CharField(max_length=900)
    type = models.CharField(max_length=16, choices=Type.choices)
    description = models.CharField(max_length=1024, blank=True, default="")
    # Standard values only; empty for sensitive parameters.
    plain_value = models.TextField(blank=True, default="")
    # Sensitive values only: a Fernet token and the id of the key that made it.
    encrypted_value = models.TextField(blank=True, default="")
    key_id = models.CharField(max_length=16, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["operator", "name"], name="parameter_unique_name"),
            models.CheckConstraint(
                condition=(
                    models.Q(type="standard", encrypted_value="", key_id="")
                    | models.Q(type="sensitive", plain_value="")
                ),
                name="parameter_value_matches_type",
            ),
        ]
        indexes = [
            models.Index(fields=["operator", "updated_at"], name="parameter_updated_idx"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_sensitive(self) -> bool:
        return self.type == self.Type.SENSITIVE

    @property
    def shown_value(self) -> str:
        """What the API and admin may show: the value, or a mask for sensitive ones."""
        return MASK if self.is_sensitive else self.plain_value
