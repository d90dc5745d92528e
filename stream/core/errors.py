"""The one error type for input harstream refuses and counts.

Every receiver of outside input (the worker on the bus, the gateway for
phones, the dashboard) drops a bad message and counts it under a short
``reason``. :class:`InputError` is that shape: ``reason`` (one of its
subclass's ``REASONS``) and a human-readable ``detail``; ``str(error)`` is
``"reason: detail"``. Subclasses name where the input came from:
:class:`~harstream.stream.core.protocol.ProtocolError` (the bus) and
:class:`~harstream.stream.gateway.phone_formats.FormatError` (phone apps). A caller
that counts rejections by reason can catch ``InputError`` for both.
"""

from __future__ import annotations


class InputError(ValueError):
    """Refused input: ``reason`` (one of ``REASONS``) and ``detail``."""

    #: The reasons a subclass may raise; receivers count by them.
    REASONS: tuple[str, ...] = ()

    def __init__(self, reason: str, detail: str):
        assert reason in self.REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
