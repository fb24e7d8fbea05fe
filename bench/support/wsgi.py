"""The WSGI app the benchmarks serve: the project as configured, plus one empty view
(`/bench/empty`) that measures what Django itself costs per request."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse
from django.urls import path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()


def empty(request):
    return HttpResponse(b"{}", content_type="application/json")


from config.urls import urlpatterns as project_urlpatterns  # noqa: E402

urlpatterns = [path("bench/empty", empty), *project_urlpatterns]

from django.conf import settings  # noqa: E402

settings.ROOT_URLCONF = __name__
