"""The running instance's parts, each small and tested alone, wired by ``feddns.app``.

``options`` (the frozen core configuration built from ``Settings``),
``supervisor`` (the sources, behind one protocol, restarted on failure),
``warmstart`` (the snapshot: loaded at start, saved while running), ``reloader``
(a new config applied without dropping a query), ``statelog`` (cluster state
changes, logged once) and ``tuning`` (process-wide interpreter settings).
"""
