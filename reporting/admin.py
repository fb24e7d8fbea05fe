"""The connector catalogue in the admin, with each connector's adoption.

`Connector` is a streams model, but its admin lives here: its counts are derived by
`reporting.platform` (connections from collectors, webhook endpoints and stream nodes;
gateway calls from the usage counters), which streams may not import. Django lists it
under Streams all the same.
"""

from __future__ import annotations

from django.contrib import admin

from common.admin import ReadOnlyAdmin
from reporting.platform import ConnectorFigures, connector_figures
from streams.models import Connector


@admin.register(Connector)
class ConnectorAdmin(ReadOnlyAdmin):
    """Read-only: the catalogue is seeded by migration and its slugs key the counters."""

    list_display = ["id", "name", "direction"]
    list_filter = ["direction"]
    search_fields = ["id", "name"]
    fields = ["id", "name", "direction", "description"]

    def get_list_display(self, request):
        # The figures of every connector, read once per page (a few queries, whatever
        # the number of rows) and shown through columns that close over them.
        figures: dict[str, ConnectorFigures] = {}

        def figure(obj: Connector) -> ConnectorFigures | None:
            if not figures:
                figures.update((item.id, item) for item in connector_figures())
            return figures.get(obj.pk)

        @admin.display(description="active connections")
        def active_connections(obj: Connector) -> int:
            found = figure(obj)
            return found.connections.active if found else 0

        @admin.display(description="inactive connections")
        def inactive_connections(obj: Connector) -> int:
            found = figure(obj)
            return found.connections.inactive if found else 0

        @admin.display(description="operators using")
        def operators_using(obj: Connector) -> int:
            found = figure(obj)
            return found.operators_using if found else 0

        @admin.display(description="gateway calls")
        def gateway_calls(obj: Connector) -> int:
            found = figure(obj)
            return found.gateway_calls if found else 0

        return [
            "id",
            "name",
            "direction",
            active_connections,
            inactive_connections,
            operators_using,
            gateway_calls,
        ]
