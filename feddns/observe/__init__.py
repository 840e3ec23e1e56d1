"""Operating feddns: metrics, health and debug endpoints, logs, status, resolver integration.

Why it exists: an operator must see what a running feddns believes (which
clusters are fresh, how old the data is, what it answers) and plug it into
the DNS around it (CoreDNS, NodeLocal DNSCache, kube-dns) without reading the
code. Nothing here sits on the query path; the instance is read through the
narrow :class:`~feddns.observe.instance.Instance` protocol, never the app
itself. ``prometheus_client`` and ``aiohttp`` are imported only by
:mod:`metrics` and :mod:`http`, which load once DNS is already serving.
"""
