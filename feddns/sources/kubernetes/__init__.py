"""The Kubernetes source: list and watch Services and EndpointSlices of a member cluster.

This package is the only place that imports the ``kubernetes`` client
(``client.py``); API objects are converted to :mod:`feddns.model` objects in
``converting.py`` inside the worker threads, so nothing past this package sees
a ``V1*`` object or a raw dict.
"""
