"""The Streamlit dashboard: subscribes to the bus, never computes predictions."""
