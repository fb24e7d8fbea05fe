from __future__ import annotations

from django import forms
from django.contrib import admin
from unfold.contrib.filters.admin import AutocompleteSelectFilter
from unfold.decorators import display

from common.admin import ModelAdmin, ServiceAdminMixin, admin_link, adopt_created, shortened
from parameters import services
from parameters.models import MASK, Parameter
from parameters.rules import (
    DESCRIPTION_MAX_LENGTH,
    MAX_PARAMETERS_PER_OPERATOR,
    VALUE_MAX_LENGTH,
    name_problem,
    value_problem,
)


class ParameterForm(forms.ModelForm):
    """Validates like the API. A sensitive value is write-only: the form never shows it,
    and leaving the field empty on edit keeps the stored value."""

    value = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=VALUE_MAX_LENGTH,
        required=False,
        strip=False,
    )
    description = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=DESCRIPTION_MAX_LENGTH,
        required=False,
        strip=False,
    )

    class Meta:
        model = Parameter
        fields = ["operator", "name", "type", "value", "description"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.instance._state.adding:
            for field in ("operator", "name", "type"):
                self.fields[field].disabled = True
            if self.instance.is_sensitive:
                self.fields["value"].widget = forms.PasswordInput(render_value=False)
                self.fields[
                    "value"
                ].help_text = f"Stored encrypted and shown as {MASK}. Leave empty to keep it."
            else:
                self.fields["value"].initial = self.instance.plain_value
        else:
            self.fields["value"].required = True

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        problem = name_problem(name)
        if problem:
            raise forms.ValidationError(problem)
        return name

    def clean_value(self) -> str:
        value = self.cleaned_data.get("value", "")
        if not self.instance._state.adding and self.instance.is_sensitive and value == "":
            return ""
        problem = value_problem(value)
        if problem:
            raise forms.ValidationError(problem)
        return value

    def clean(self):
        cleaned = super().clean()
        operator = cleaned.get("operator")
        at_quota = (
            self.instance._state.adding
            and operator is not None
            and Parameter.objects.filter(operator=operator).count() >= MAX_PARAMETERS_PER_OPERATOR
        )
        if at_quota:
            raise forms.ValidationError(
                f"This operator already has {MAX_PARAMETERS_PER_OPERATOR} parameters."
            )
        return cleaned


@admin.register(Parameter)
class ParameterAdmin(ServiceAdminMixin, ModelAdmin):
    form = ParameterForm
    list_display = ["name", "operator_link", "type_label", "shown", "updated_at", "described"]
    list_filter = ["type", ("operator", AutocompleteSelectFilter)]
    list_select_related = ["operator"]
    search_fields = ["name", "description", "operator__name"]
    readonly_fields = ["key_id", "created_at", "updated_at"]

    def get_fields(self, request, obj=None):
        fields = ["operator", "name", "type", "value", "description"]
        return fields if obj is None else [*fields, *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else []

    @admin.display(description="operator", ordering="operator__name")
    def operator_link(self, obj: Parameter) -> str:
        return admin_link(obj.operator)

    @display(
        description="type",
        ordering="type",
        label={"Standard": "info", "Sensitive": "warning"},
    )
    def type_label(self, obj: Parameter) -> str:
        return obj.get_type_display()

    @admin.display(description="value")
    def shown(self, obj: Parameter) -> str:
        return shortened(obj.shown_value, 40)

    @admin.display(description="description")
    def described(self, obj: Parameter) -> str:
        return shortened(obj.description, 40)

    def save_model(self, request, obj: Parameter, form, change) -> None:
        data = form.cleaned_data
        if change:
            services.parameter_update(
                parameter=obj,
                value=data["value"] or None,
                description=data["description"],
            )
            return
        created = services.parameter_create(
            operator=data["operator"],
            name=data["name"],
            type=data["type"],
            value=data["value"],
            description=data["description"],
        )
        adopt_created(obj, created)
