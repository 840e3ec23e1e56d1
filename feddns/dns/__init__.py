"""DNS: the wire format, the answer table, the query handler and the transports.

``wire`` owns the byte format, ``compiling`` decides which names and records
exist, ``answer`` holds them pre-encoded, ``handling`` applies the protocol
rules to one message, and ``server`` owns sockets. Only ``server`` does I/O.
"""
