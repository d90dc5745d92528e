"""Recordings: every reader (embedded HAPT, RawData, UCI HAR, CSV) and the restricted unpickler.
Used by the simulator and by training alike.
Imports `stream.core` and `stream.files`.
"""
