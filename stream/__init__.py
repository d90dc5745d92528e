"""The live path: causal filters and windowing, recordings, the wire protocol,
the worker and the phone gateway. Importing this package imports nothing heavy."""
