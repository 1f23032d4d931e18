"""Entry module for `dramatiq workers.main`: the broker, then every actor module."""

from domain.settings import load_settings
from workers.broker import setup_broker

broker = setup_broker(load_settings())

from workers import provisioning  # noqa: E402,F401  (actors register on the broker set above)
