"""Forwarders: central's events pushed to other systems (webhook, MQTT, CAP) from durable
per-forwarder queues in central's storage."""
