"""Django's auth forms with the admin's input styling."""

from __future__ import annotations

from django import forms
from django.contrib.auth import forms as auth_forms
from unfold.widgets import BASE_INPUT_CLASSES

INPUT_CLASS = " ".join(BASE_INPUT_CLASSES)


class _Styled:
    """Gives every visible input the admin's classes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            if not isinstance(field.widget, forms.HiddenInput):
                field.widget.attrs["class"] = INPUT_CLASS


class LoginForm(_Styled, auth_forms.AuthenticationForm):
    pass


class PasswordChangeForm(_Styled, auth_forms.PasswordChangeForm):
    pass


class PasswordResetForm(_Styled, auth_forms.PasswordResetForm):
    pass


class SetPasswordForm(_Styled, auth_forms.SetPasswordForm):
    pass
