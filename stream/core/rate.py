"""The one sample rate of harstream: 50 Hz.

UCI HAR and the raw HAPT recordings it was cut from are sampled at 50 Hz, so
every trained model expects it: recordings are read at it, phones are
resampled onto it, the bus carries only it, and the filters are designed for
it. It lives in a module of its own (no imports) so that the protocol and the
recording readers can share it without importing scipy through the filters.
"""

RATE_HZ = 50.0
