"""Pantau edge agent: turns camera streams into counts and alerts and ships them over MQTT.

Importing this package is cheap: heavy dependencies (OpenCV, onnxruntime) are imported only by
the modules that need them, so `central` can import the wire package (`pantau.agent.wire`)
without the vision stack.
"""
