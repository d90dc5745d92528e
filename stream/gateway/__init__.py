"""The phone gateway: HTTP/WebSocket server, phone formats, admission, device claims, calibration flow.
Pure checks (`admission`, `phone_formats`, `device_claims`) behind a thin Starlette/uvicorn edge.
Imports `stream.core`, `stream.bus`, `stream.files` and `stream.personal`.
"""
