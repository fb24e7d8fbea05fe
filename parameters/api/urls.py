from django.urls import path, re_path

from parameters.api.views import ParameterDetailView, ParameterListView

urlpatterns = [
    path("global-parameters/v1/parameters", ParameterListView.as_view(), name="parameter-list"),
    # Names are hierarchical (a/b/c), so the rest of the path is the name.
    re_path(
        r"^global-parameters/v1/parameters/(?P<name>.+)$",
        ParameterDetailView.as_view(),
        name="parameter-detail",
    ),
]
