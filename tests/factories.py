"""Test data through the services, with factory_boy: what a factory builds is what the
API or the admin would have built (validation, defaults, side effects included).

    MeterTypeFactory(operator=acme.operator, thresholds=[{"absoluteValue": 800}])

Thresholds are given in their wire form, as a client sends them.
"""

from __future__ import annotations

import factory

from collection.models import Collector
from collection.services import collector_create, collector_provision
from metering.models import Meter, MeterType
from metering.services import meter_create, meter_type_create
from metering.thresholds import thresholds_parse, thresholds_to_stored
from parameters.models import Parameter
from parameters.services import parameter_create
from tenants.models import Operator
from tenants.services import operator_create


class ServiceFactory(factory.Factory):
    """A factory whose objects are created by `_service(**fields)`."""

    class Meta:
        abstract = True

    _service = None

    @classmethod
    def _create(cls, model_class, *args, **fields):
        return cls._service(**fields)

    @classmethod
    def _build(cls, model_class, *args, **fields):
        raise TypeError(f"{cls.__name__} only creates objects, through the service.")


class OperatorFactory(ServiceFactory):
    class Meta:
        model = Operator

    _service = staticmethod(operator_create)
    name = factory.Sequence(lambda n: f"Operator {n}")


class MeterTypeFactory(ServiceFactory):
    class Meta:
        model = MeterType

    operator = factory.SubFactory(OperatorFactory)
    name = factory.Sequence(lambda n: f"meter type {n}")
    unit = "calls"
    aggregation = MeterType.Aggregation.SUM
    timezone = "Etc/UTC"
    reset_cron = "0 0 * * *"
    # Always active unless a test says otherwise (the API's default is "from now", which
    # would ignore usage at the fixed past moments tests use).
    active_from = None

    @classmethod
    def _create(cls, model_class, *args, thresholds=None, **fields):
        if thresholds is not None:
            fields["thresholds"] = thresholds_to_stored(thresholds_parse(thresholds))
        return meter_type_create(**fields)


class MeterFactory(ServiceFactory):
    class Meta:
        model = Meter

    _service = staticmethod(meter_create)
    meter_type = factory.SubFactory(MeterTypeFactory)
    operator = factory.SelfAttribute("meter_type.operator")
    meter_key = factory.Sequence(lambda n: f"key-{n}")
    user_id = factory.Sequence(lambda n: f"user-{n}@example.com")


class CollectorFactory(ServiceFactory):
    """An ACTIVE collector (provisioned as the worker would), unless active=False."""

    class Meta:
        model = Collector

    operator = factory.SubFactory(OperatorFactory)
    name = factory.Sequence(lambda n: f"collector-{n}")

    @classmethod
    def _create(cls, model_class, *args, active=True, **fields):
        collector = collector_create(**fields)
        if active:
            collector_provision(collector_id=collector.pk)
            collector.refresh_from_db()
        return collector


class ParameterFactory(ServiceFactory):
    class Meta:
        model = Parameter

    _service = staticmethod(parameter_create)
    operator = factory.SubFactory(OperatorFactory)
    name = factory.Sequence(lambda n: f"parameters/p{n}")
    type = "standard"
    value = "value"
