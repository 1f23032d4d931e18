"""The scopes an API key can carry (api-v1.md)."""

ALL_SCOPES = (
    "customers:read", "customers:write", "services:read", "services:write", "billing:read", "billing:write",
    "provisioning:write", "jobs:read", "tenant:write", "webhooks:read", "webhooks:write",
)


def parse_scopes(text: str) -> list[str]:
    """Split `a:b,c:d`; raise ValueError naming any unknown scope."""
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in ALL_SCOPES]
    if unknown or not scopes:
        raise ValueError(f"unknown scopes {unknown}; known: {', '.join(ALL_SCOPES)}" if unknown else "no scopes given")
    return sorted(set(scopes), key=ALL_SCOPES.index)
