"""Errors that services raise and every caller understands the same way."""


class ServiceConflict(Exception):
    """A write that breaks a uniqueness, quota or dependency rule. The API answers 409
    with the message; the admin shows it as a form error."""
