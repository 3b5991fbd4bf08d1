"""Pantau central aggregator: receives agent messages over MQTT, validates, stores and reports."""
