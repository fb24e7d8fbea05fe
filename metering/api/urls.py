from rest_framework.routers import SimpleRouter

from metering.api.views import MeterTypeViewSet, MeterViewSet


class ExactRouter(SimpleRouter):
    """Routes without trailing slashes, as the API reference spells them."""

    def __init__(self) -> None:
        super().__init__(trailing_slash="")


router = ExactRouter()
router.register("usage-metering/v1/meter-types", MeterTypeViewSet, basename="meter-type")
router.register("usage-metering/v1/meters", MeterViewSet, basename="meter")

urlpatterns = router.urls
