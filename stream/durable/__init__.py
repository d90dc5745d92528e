"""The durable log on Redis Streams: broker, bridge, partitions, leases, the worker on the log.
An optional scale-out edge; only imported in `--redis` mode.
Imports `stream.core`, `stream.bus` and `stream.personal`.
"""
