"""The ASGI app that `hostq api` serves (settings read once, at import)."""

from api.app import create_app
from domain.settings import load_settings

app = create_app(load_settings())
