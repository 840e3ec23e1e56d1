"""The registry's data model: small frozen objects every source converts into.

Sources (static files, Kubernetes watches, the MQTT bus) strip their inputs
down to these types at the door, so nothing past a source sees a ``V1*``
object or a raw dict, and the DNS layer works on one shape whatever the origin
of the data.
"""
