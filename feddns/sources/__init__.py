"""Sources feed per-cluster snapshots into the registry.

Each source converts its input (a file, a Kubernetes API, the MQTT bus) into
:mod:`feddns.model` objects at the door and writes only through the
registry's methods, on the event loop.
"""
