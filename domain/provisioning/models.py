"""WHM servers: where accounts live, grouped by region."""

from __future__ import annotations

from sqlalchemy import Boolean, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from domain.db import Base


class WhmServer(Base):
    """A WHM server of a region; its API token is stored encrypted with the KEK."""

    __tablename__ = "whm_servers"

    name: Mapped[str] = mapped_column(String(200))
    region: Mapped[str] = mapped_column(String(32), index=True)
    url: Mapped[str] = mapped_column(String(500))
    username: Mapped[str] = mapped_column(String(64))
    token_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    capacity: Mapped[int] = mapped_column(Integer, default=500)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The services counting on it (services.rules.holds_place: live, or failed with a createacct in doubt), kept
    # by a trigger on services (migrations 0009 and 0012): never written by the application.
    used: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
