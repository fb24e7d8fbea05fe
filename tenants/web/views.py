"""Sign-in pages: Django's auth views with Tally's templates, forms and redirects."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse_lazy

from tenants.web.forms import LoginForm, PasswordChangeForm, PasswordResetForm, SetPasswordForm
from tenants.web.look import look_context
from tenants.web.memberships import home_url


class _Look:
    """Gives the page the admin's look and a way home."""

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(look_context(self.request))
        if self.request.user.is_authenticated:
            context["home_url"] = home_url(self.request.user)
        return context


def home(request: HttpRequest) -> HttpResponse:
    """`/`: a signed-in user's start page, else the login page."""
    if request.user.is_authenticated:
        return redirect(home_url(request.user))
    return redirect("login")


class LoginView(_Look, auth_views.LoginView):
    template_name = "registration/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True
    extra_context = {"title": "Log in"}

    def get_default_redirect_url(self) -> str:
        return home_url(self.request.user)


class LogoutView(auth_views.LogoutView):
    """POST only (Django's rule: a link cannot sign anyone out); back to the login page."""

    next_page = reverse_lazy("login")

    def post(self, request, *args, **kwargs):
        response = super().post(request, *args, **kwargs)
        messages.info(request, "You are logged out.")
        return response


class PasswordChangeView(_Look, auth_views.PasswordChangeView):
    # Not Django's default template names: those are the admin's own pages.
    template_name = "registration/account_password_change.html"
    form_class = PasswordChangeForm
    success_url = reverse_lazy("password_change_done")
    extra_context = {"title": "Change password"}


class PasswordChangeDoneView(_Look, auth_views.PasswordChangeDoneView):
    template_name = "registration/account_password_change_done.html"
    extra_context = {"title": "Password changed"}


class PasswordResetView(_Look, auth_views.PasswordResetView):
    template_name = "registration/password_reset_form.html"
    form_class = PasswordResetForm
    email_template_name = "registration/password_reset_email.txt"
    subject_template_name = "registration/password_reset_subject.txt"
    success_url = reverse_lazy("password_reset_done")
    extra_context = {"title": "Reset password"}


class PasswordResetDoneView(_Look, auth_views.PasswordResetDoneView):
    template_name = "registration/password_reset_done.html"
    extra_context = {"title": "Check your email"}


class PasswordResetConfirmView(_Look, auth_views.PasswordResetConfirmView):
    template_name = "registration/password_reset_confirm.html"
    form_class = SetPasswordForm
    success_url = reverse_lazy("password_reset_complete")
    extra_context = {"title": "Choose a new password"}


class PasswordResetCompleteView(_Look, auth_views.PasswordResetCompleteView):
    template_name = "registration/password_reset_complete.html"
    extra_context = {"title": "Password reset"}
