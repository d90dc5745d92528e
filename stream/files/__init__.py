"""Files others may write, read without waiting and within bounds: small regular files, zips judged by their directory.
Plain I/O the other rooms share (the core is sans-I/O, so it is not there).
Imports no other room.
"""
