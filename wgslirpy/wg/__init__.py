"""WireGuard, pure (no I/O): see endpoint.WireGuardEndpoint for the facade."""

from .endpoint import (
    EndpointChanged,
    HandshakeCompleted,
    PeerConfig,
    PeerKeysZeroed,
    WgEvent,
    WireGuardEndpoint,
)

__all__ = [
    "EndpointChanged",
    "HandshakeCompleted",
    "PeerConfig",
    "PeerKeysZeroed",
    "WgEvent",
    "WireGuardEndpoint",
]
