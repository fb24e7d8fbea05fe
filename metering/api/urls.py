from django.urls import re_path
from rest_framework.routers import SimpleRouter

from metering.api.views import (
    BillingAccountViewSet,
    ExchangeRateViewSet,
    MeterTypeViewSet,
    MeterViewSet,
    PlanAssignmentViewSet,
    PricePlanViewSet,
)


class ExactRouter(SimpleRouter):
    """Routes without trailing slashes, as the API reference spells them."""

    def __init__(self) -> None:
        super().__init__(trailing_slash="")


router = ExactRouter()
router.register("usage-metering/v1/meter-types", MeterTypeViewSet, basename="meter-type")
router.register("usage-metering/v1/meters", MeterViewSet, basename="meter")
router.register("billing/v1/accounts", BillingAccountViewSet, basename="billing-account")
router.register("billing/v1/price-plans", PricePlanViewSet, basename="price-plan")
router.register("billing/v1/plan-assignments", PlanAssignmentViewSet, basename="plan-assignment")

# Exchange rates are addressed by currency and day, two path segments.
urlpatterns = [
    *router.urls,
    re_path(
        r"^billing/v1/exchange-rates$",
        ExchangeRateViewSet.as_view({"get": "list"}),
        name="exchange-rate-list",
    ),
    re_path(
        r"^billing/v1/exchange-rates/(?P<currency>[^/]+)/(?P<date>[^/]+)$",
        ExchangeRateViewSet.as_view({"get": "retrieve", "put": "update", "delete": "destroy"}),
        name="exchange-rate-detail",
    ),
]
