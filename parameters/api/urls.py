from django.urls import path, re_path

from parameters.api.views import ParameterViewSet

urlpatterns = [
    path(
        "global-parameters/v1/parameters",
        ParameterViewSet.as_view({"get": "list", "post": "create", "delete": "bulk_destroy"}),
        name="parameter-list",
    ),
    # Names are hierarchical (a/b/c), so the rest of the path is the name.
    re_path(
        r"^global-parameters/v1/parameters/(?P<name>.+)$",
        ParameterViewSet.as_view({"get": "retrieve", "patch": "partial_update"}),
        name="parameter-detail",
    ),
]
