"""`manage.py runserver` that reads chunked request bodies (see common/devserver.py).

It extends whichever runserver comes next in INSTALLED_APPS (WhiteNoise's, then
staticfiles'), so their behaviour is kept.
"""

from whitenoise.runserver_nostatic.management.commands.runserver import (
    Command as WhiteNoiseRunserver,
)

from common.devserver import ChunkedWSGIServer


class Command(WhiteNoiseRunserver):
    server_cls = ChunkedWSGIServer
