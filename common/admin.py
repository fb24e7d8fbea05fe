"""Helpers shared by the apps' admin modules.

Every admin page derives from the classes here, which are unfold's (the admin's theme)
with Tally's conventions added:

- numbers are exact and without the column's trailing zeros (4068, not
  4068.0000000000), in list columns, read-only fields and form inputs alike;
- fields a form declares itself (threshold rows, scopes…) get the theme's look too;
- saves that go through a service show the service's refusal on the form;
- big tables are paginated without counting every row (`LargeTablePaginator`).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib.admin.utils import quote
from django.contrib.admin.widgets import RelatedFieldWidgetWrapper
from django.core.paginator import Paginator
from django.db import connections, models
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.http import urlencode
from unfold import widgets as look
from unfold.admin import ModelAdmin as ThemeModelAdmin
from unfold.admin import StackedInline as ThemeStackedInline
from unfold.admin import TabularInline as ThemeTabularInline

from common.errors import ServiceConflict
from common.json import loads, normalize_decimal

# -- Numbers ------------------------------------------------------------------------------


def exact_number(value: Any) -> Any:
    """A Decimal without trailing zeros (4068 for 4068.0000000000, 0.5 for 0.5000000000,
    1000 rather than 1E+3); anything else as it is."""
    return normalize_decimal(value) if isinstance(value, Decimal) else value


_RENDERED_DECIMAL = re.compile(r"-?\d+\.\d+")


def trim_rendered_decimal(contents: str) -> str:
    """A read-only decimal as the admin renders it ("4068.0000000000"), trimmed."""
    text = str(contents).strip()
    if _RENDERED_DECIMAL.fullmatch(text):
        return text.rstrip("0").rstrip(".")
    return contents


class ExactDecimalField(forms.DecimalField):
    """A decimal input that shows 200, not the column's 200.0000000000."""

    def prepare_value(self, value):
        return exact_number(super().prepare_value(value))


def _decimal_fields(model) -> dict[str, models.DecimalField]:
    return {
        field.name: field
        for field in model._meta.get_fields()
        if isinstance(field, models.DecimalField)
    }


# -- Form widgets ---------------------------------------------------------------------------


def _theme_classes(widget: forms.Widget) -> list[str] | None:
    if isinstance(widget, forms.HiddenInput):
        return None
    if isinstance(widget, forms.CheckboxSelectMultiple | forms.CheckboxInput):
        return look.CHECKBOX_CLASSES
    if isinstance(widget, forms.RadioSelect):
        return look.RADIO_CLASSES
    if isinstance(widget, forms.Select):
        return look.SELECT_CLASSES
    if isinstance(widget, forms.Textarea):
        return look.TEXTAREA_CLASSES
    if isinstance(widget, forms.FileInput):
        return look.FILE_CLASSES
    if isinstance(widget, forms.widgets.Input):
        return look.BASE_INPUT_CLASSES
    return None


def style_widget(widget: forms.Widget) -> None:
    """Give a plain Django widget (and the parts of a multi-widget) the theme's classes;
    widgets that already carry classes keep them."""
    if isinstance(widget, RelatedFieldWidgetWrapper):
        style_widget(widget.widget)
        return
    if isinstance(widget, forms.MultiWidget):
        for part in widget.widgets:
            style_widget(part)
        return
    if widget.attrs.get("class"):
        return
    classes = _theme_classes(widget)
    if classes:
        widget.attrs["class"] = " ".join(classes)


def themed_form(form_class: type[forms.BaseForm]) -> type[forms.BaseForm]:
    """`form_class` whose fields, declared ones included, wear the theme."""

    class ThemedForm(form_class):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            for field in self.fields.values():
                style_widget(field.widget)

    ThemedForm.__name__ = form_class.__name__
    ThemedForm.__qualname__ = form_class.__qualname__
    return ThemedForm


# -- Links --------------------------------------------------------------------------------


def admin_url(obj: models.Model | None) -> str | None:
    """The admin change page of `obj`, or None when it has none."""
    if obj is None:
        return None
    opts = obj._meta
    try:
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[quote(obj.pk)])
    except NoReverseMatch:
        return None


def admin_link(obj: models.Model | None, text: Any = None) -> str:
    """A link to `obj`'s admin page, shown as `text` (default: the object); "-" for none."""
    if obj is None:
        return "-"
    url = admin_url(obj)
    if url is None:
        return str(text if text is not None else obj)
    return format_html('<a class="text-link" href="{}">{}</a>', url, text if text else obj)


def changelist_link(model: type[models.Model], text: Any, **filters: Any) -> str:
    """A link to `model`'s list filtered by `filters` (field lookups as query keys)."""
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    query = urlencode({key: str(value) for key, value in filters.items()})
    return format_html('<a class="text-link" href="{}?{}">{}</a>', url, query, text)


def usage_bar(value: Decimal | None, capacity: Decimal | None) -> str:
    """Value against capacity as a small bar with the percentage ("-" without capacity)."""
    if value is None or not capacity:
        return "-"
    percent = value / capacity * 100
    width = max(0, min(100, int(percent)))
    tone = (
        "bg-red-600" if percent >= 100 else "bg-orange-500" if percent >= 80 else "bg-primary-600"
    )
    return format_html(
        '<span class="flex items-center gap-2 whitespace-nowrap">'
        '<span class="bg-base-200 block h-1.5 overflow-hidden rounded-full w-16">'
        '<span class="block h-1.5 rounded-full {}" style="width: {}%"></span>'
        "</span>{} %</span>",
        tone,
        width,
        f"{percent:.1f}",
    )


def shortened(text: str | None, length: int = 40) -> str:
    """`text` cut to `length` characters with an ellipsis, the whole in a tooltip."""
    if not text:
        return "-"
    if len(text) <= length:
        return text
    return format_html('<span title="{}">{}…</span>', text, text[: length - 1])


# -- Admin classes ------------------------------------------------------------------------


class ReadableValuesMixin:
    """Decimal fields without the column's trailing zeros, in list columns, read-only
    fields and inputs; date-times in list columns compact (2026-05-01 13:05), so that
    wide lists fit the screen."""

    def _exact_setup(self) -> None:
        self._decimals = _decimal_fields(self.model)
        trims = {name: trim_rendered_decimal for name in self._decimals}
        self.readonly_preprocess_fields = {**trims, **(self.readonly_preprocess_fields or {})}
        # One column function per field, made once: the changelist compares them by
        # identity to tell which columns are sortable.
        self._list_columns = {name: self._exact_column(name) for name in self._decimals}
        for field in self.model._meta.concrete_fields:
            if isinstance(field, models.DateTimeField):
                self._list_columns[field.name] = self._moment_column(field)

    def _exact_column(self, name: str):
        field = self._decimals[name]

        def column(obj):
            return exact_number(getattr(obj, name))

        return _as_column(column, field)

    def _moment_column(self, field: models.DateTimeField):
        def column(obj):
            return compact_datetime(getattr(obj, field.name))

        return _as_column(column, field)

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if isinstance(db_field, models.DecimalField):
            kwargs.setdefault("form_class", ExactDecimalField)
        return super().formfield_for_dbfield(db_field, request, **kwargs)


def _as_column(column, field: models.Field):
    column.__name__ = field.name
    column.short_description = field.verbose_name
    column.admin_order_field = field.name
    return column


def compact_datetime(value) -> str:
    """A moment as "2026-05-01 13:05" in the site's time zone (UTC), whole on one line,
    with seconds in its tooltip."""
    if value is None:
        return "-"
    local = timezone.localtime(value)
    return format_html(
        '<span class="whitespace-nowrap" title="{}">{}</span>',
        f"{local:%Y-%m-%d %H:%M:%S %Z}",
        f"{local:%Y-%m-%d %H:%M}",
    )


class ModelAdmin(ReadableValuesMixin, ThemeModelAdmin):
    """The base of every Tally model admin."""

    # Filters apply with one button rather than reloading a big list per click.
    list_filter_submit = True
    warn_unsaved_form = True

    def __init__(self, model, admin_site) -> None:
        super().__init__(model, admin_site)
        self._exact_setup()

    def get_list_display(self, request):
        return [
            self._list_columns.get(name, name) if isinstance(name, str) else name
            for name in super().get_list_display(request)
        ]

    def get_list_display_links(self, request, list_display):
        links = super().get_list_display_links(request, list_display)
        if not links:
            return links
        return [
            self._list_columns.get(name, name) if isinstance(name, str) else name for name in links
        ]

    def get_form(self, request, obj=None, change=False, **kwargs):
        return themed_form(super().get_form(request, obj, change=change, **kwargs))


class InlineMixin(ReadableValuesMixin):
    def __init__(self, parent_model, admin_site) -> None:
        super().__init__(parent_model, admin_site)
        self._exact_setup()

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        formset.form = themed_form(formset.form)
        return formset


class TabularInline(InlineMixin, ThemeTabularInline):
    pass


class StackedInline(InlineMixin, ThemeStackedInline):
    pass


class ReadOnlyInline(TabularInline):
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


class ReadOnlyAdmin(ModelAdmin):
    """Rows written only by Tally itself (counters, rollups, logs): shown, never added,
    changed or deleted by hand."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# -- Saving through services ----------------------------------------------------------------


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


# -- Big tables -----------------------------------------------------------------------------


def planner_row_estimate(queryset: models.QuerySet) -> int:
    """How many rows PostgreSQL's planner expects `queryset` to return (from the table
    statistics: no row is read)."""
    sql, params = queryset.order_by().query.sql_with_params()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        (plan,) = cursor.fetchone()
    if isinstance(plan, str | bytes):
        plan = loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


class LargeTablePaginator(Paginator):
    """Pages of a table too big to count (records, ingestions, notifications, periods).

    Counts exactly up to `exact_limit` rows, with a COUNT that stops there; above it
    the page shows the planner's estimate ("about …"), so a list never costs a
    COUNT(*) over millions of rows. An estimate can be off either way: the last pages
    it offers may be empty, or rows past them unlisted; filters and exact searches
    narrow a list back to what is counted exactly.
    """

    template_name = "admin/tally/pagination.html"
    exact_limit = 10_000
    is_estimate = False

    @cached_property
    def count(self) -> int:
        # Only the keys: the list's annotations (subqueries per row) need not run here.
        bounded = self.object_list.order_by().values("pk")[: self.exact_limit + 1].count()
        if bounded <= self.exact_limit:
            return bounded
        self.is_estimate = True
        return max(bounded, planner_row_estimate(self.object_list))


class LargeTableAdminMixin:
    """For admins of big tables: no full count, the estimating paginator, and pages of
    50 rows (rendering a row costs more than reading it: 100 took about 200 ms)."""

    show_full_result_count = False
    paginator = LargeTablePaginator
    list_per_page = 50
