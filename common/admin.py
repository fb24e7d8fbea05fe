"""Helpers shared by the apps' admin modules."""

from __future__ import annotations

from django import forms
from django.contrib import admin

from common.errors import ServiceConflict


def adopt_created(unsaved, created) -> None:
    """Make the admin's unsaved form object the row a service created, so the admin's
    log entry and redirect point at the real row."""
    for field in created._meta.concrete_fields:
        setattr(unsaved, field.attname, getattr(created, field.attname))
    unsaved._state.adding = False
    unsaved._state.db = created._state.db


class ServiceAdminMixin:
    """For admins whose saves go through a service: a ServiceConflict raised while saving
    (a name taken between validation and save, a quota reached) is shown on the form as
    an error, as the API answers 409, instead of failing the page.

    Django runs the save inside the change view's transaction; when the service refuses,
    that transaction is rolled back and the view runs again with the refusal as the
    form's error, so the staff member sees what they typed and why it was not saved.
    """

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ServiceConflict as exc:
            request.service_conflict = str(exc)
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change=change, **kwargs)
        conflict = getattr(request, "service_conflict", None)
        if conflict is None:
            return form_class

        class RefusedForm(form_class):
            def clean(self):
                super().clean()
                raise forms.ValidationError(conflict)

        return RefusedForm


class ReadOnlyInline(admin.TabularInline):
    """Rows shown under their parent, never added, changed or deleted there (periods,
    delivery attempts, versions…): list them in `fields`."""

    extra = 0
    can_delete = False

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
