"""The ASGI app that `hostq api` serves (settings read once, at import), with its access log."""

from api.access_log import AccessLog
from api.app import create_app
from domain.settings import load_settings

app = AccessLog(create_app(load_settings()))
