"""The browser dashboards: `/dashboard/` (an operator's people) and `/platform/` (staff).

Adding a page:

1. Write the view in a module of its own (`reporting/web/meters.py`), guarded by
   `access.operator_page` (or `access.staff_page` for the platform; the mixins for
   class-based views). Inside, `request.operator` is the operator to show and
   `request.membership` the user's membership; look objects up with
   `access.operator_object_or_404` so another operator's id is a 404. Writes go
   through the owning app's services; viewers are refused writes before the view
   runs.
2. Read through selectors (`reporting/web/selectors.py` or the page's module), never a
   query per row, and never by scanning records: rollups, as `reporting.selectors`
   reads them.
3. Render with `shell.shell_render(request, shell.DASHBOARD, "dashboard/<page>.html",
   {"title": ...})`; the template extends "dashboard/base.html" (or
   "platform/base.html") and fills `content`. `{% load tally_web %}` gives
   `quantity` (exact numbers, no trailing zeros), `percent`, `bar_width` and `ago`.
4. Route it in `urls.py` (or `platform_urls.py`). The navigation's entries
   (`shell.NAVIGATION`) are URL names: "dashboard:meters", "dashboard:usage",
   "dashboard:collectors", "dashboard:streams", "dashboard:access",
   "platform:operators", "platform:connectors", "platform:billing",
   "platform:settings". An entry shows as soon as its name resolves, and stays active
   on sub-pages named "<entry>-<anything>" ("dashboard:meters-detail", which the
   overview's alerts link to once it exists).
5. Test it as the pages' tests do (tests/reporting/web/): anonymous, another
   operator, viewer, CSRF, query count constant in the number of rows; and at 390 px
   in Chromium with `tests/e2e/dashboard.py`.

Pages must work at 1280 and 390 px without a horizontal scrollbar (lists instead of
wide tables on phones), have a title, labels, and an empty state that says what would
fill them. Times are UTC.
"""
