"""The pure core of the live path: filters, windows, the wire format, the decoder and `StreamCore`.
Sans-I/O: no sockets, files or threads; clocks are passed in.
Imports nothing from the other rooms of `stream/`.
"""
