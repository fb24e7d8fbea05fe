import django_filters

from parameters.models import Parameter


class ParameterFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter(
        lookup_expr="icontains", help_text="Full or partial parameter name."
    )

    class Meta:
        model = Parameter
        fields = ["name"]
