"""Personal models of calibrated devices: the calibration CSV format and the folder the worker watches.
No TensorFlow here: a loader is passed in by the command.
Imports `stream.core` and `stream.files`.
"""
