"""What the gateway's edges need of the gateway.

The routes (:mod:`.gateway_app`) and the SensorServer client
(:mod:`.sensorserver_client`) are given the running
:class:`~.gateway.Gateway`, which imports them to wire itself up; they type
it with this protocol so that no module imports the gateway back.
"""

from __future__ import annotations

from typing import Any, Protocol

from harstream.stream.gateway.calibration import Calibrations
from harstream.stream.gateway.config import GatewayConfig
from harstream.stream.gateway.counters import Counters
from harstream.stream.gateway.device_claims import ClaimTable
from harstream.stream.gateway.phone_formats import Readings


class GatewayPort(Protocol):
    """The gateway's state and verbs its edges use."""

    config: GatewayConfig
    counters: Counters
    claims: ClaimTable
    calibrations: Calibrations

    @property
    def closing(self) -> bool: ...

    def stats(self) -> dict: ...

    def claim(self, local: str, owner: Any, key: str | None, conn: Any = None, lease: float | None = None) -> str: ...

    def release(self, device: str, owner: Any) -> None: ...

    def publish(self, device: str, readings: Readings, source: str) -> int: ...
