import django_filters

from collection.models import Collector


class CollectorFilterSet(django_filters.FilterSet):
    class Meta:
        model = Collector
        fields = []
