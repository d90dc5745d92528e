"""The ZeroMQ edge: addresses, CURVE keys, the one socket helper, the proxy, the worker's serve loop, tail replay.
Thin I/O around `stream.core`.
Imports `stream.core`, `stream.files` and `stream.personal`.
"""
