"""feddns: an authoritative cross-cluster service-discovery DNS server.

The package version lives here so that the CLI, the ``dns-version``-style
diagnostics and the packaging metadata all read one value.
"""

__version__ = "0.1.0"
