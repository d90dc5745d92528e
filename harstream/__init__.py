"""harstream: real-time human activity recognition on 50 Hz phone IMU streams."""

__version__ = "0.1.0"
