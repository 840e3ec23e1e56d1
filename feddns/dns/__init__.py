"""DNS, the query side: the handler, its front memo and limits, and the transports.

``handling`` applies the protocol rules to one message (an entry point per
transport), ``front`` is the memo of whole answers shared with the UDP socket,
``limiting`` admits queries (ACL, rate limits, TCP caps), and ``server`` owns the
sockets. Answers come from :mod:`feddns.table`; only ``server`` does I/O.
"""
