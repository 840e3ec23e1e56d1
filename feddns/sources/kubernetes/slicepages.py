"""Decode a LIST page of EndpointSlices straight into typed structs, when msgspec is there.

Why it exists: the initial sync is bound by the process's own CPU, and for each
endpoint a LIST page cost two passes in Python's heap: the JSON parser built a dict
for every object of the page (orjson: about 2 µs per endpoint on the benchmark
machine), then :func:`~feddns.sources.kubernetes.converting.slice_info` walked those
dicts (about 2.5 µs). msgspec decodes the page into the few fields DNS needs, skipping
the rest of each object in C (0.75 µs per endpoint), and the walk over its structs is
half as long (attribute reads instead of ``dict.get`` and type checks: the decoder
already checked the types). ``bench.k8s_memory`` and bench/RESULTS.md (issue #14) have
the figures.

The structs are strict where the dict path is lenient (a ``"ready": "yes"`` is a
validation error here, ``bool("yes")`` there), so a page that does not fit them is
not converted here at all: :func:`decode_slice_page` returns None and the caller
converts that page with the dict path, which keeps every rule for odd input in one
place. A page that fits converts to exactly what the dict path gives (a property
test checks it on generated slices). Without msgspec (it is in the "fast" extra),
every page takes the dict path.
"""

from __future__ import annotations

import sys
from typing import Any

from feddns.model.services import Endpoint, Port
from feddns.sources.kubernetes.converting import (
    SERVICE_NAME_LABEL,
    SliceInfo,
    canonical_address,
    ip_list,
    protocol_of,
)

try:
    import msgspec
except ImportError:  # pragma: no cover - the "fast" extra is not installed
    msgspec = None  # type: ignore[assignment]

_new = tuple.__new__
_DEFAULT_CONDITIONS = (True, True, False)

if msgspec is not None:

    class _Conditions(msgspec.Struct, gc=False):
        ready: bool | None = None
        serving: bool | None = None
        terminating: bool | None = None

    class _Ref(msgspec.Struct, gc=False):
        name: str | None = None

    class _Endpoint(msgspec.Struct, gc=False):
        addresses: list[str] | None = None
        conditions: _Conditions | None = None
        hostname: str | None = None
        zone: str | None = None
        nodeName: str | None = None
        targetRef: _Ref | None = None

    class _Port(msgspec.Struct, gc=False):
        name: str | None = None
        port: int | None = None
        protocol: str | None = None

    class _Meta(msgspec.Struct, gc=False):
        namespace: str
        name: str
        labels: dict[str, str] | None = None

    class _Slice(msgspec.Struct, gc=False):
        metadata: _Meta
        addressType: str | None = None
        endpoints: list[_Endpoint] | None = None
        ports: list[_Port] | None = None

    class _ListMeta(msgspec.Struct, gc=False):
        resourceVersion: str | None = None
        continue_: str | None = msgspec.field(name="continue", default=None)

    class _Page(msgspec.Struct, gc=False):
        items: list[_Slice] | None = None
        metadata: _ListMeta | None = None

    _decoder: Any = msgspec.json.Decoder(_Page)
    _errors: tuple[type[Exception], ...] = (msgspec.ValidationError, msgspec.DecodeError)
else:  # pragma: no cover
    _decoder = None
    _errors = ()

AVAILABLE = _decoder is not None
"""True when pages are decoded here (msgspec is installed)."""


def decode_slice_page(data: bytes) -> tuple[list[Any], str | None, str | None] | None:
    """A LIST page of EndpointSlices as ``(structs, resourceVersion, continue)``.

    None when msgspec is missing or the page does not fit the strict structs: the
    caller then parses it as JSON and converts it with the dict path. Each struct
    goes through :func:`slice_from_struct`.
    """
    if _decoder is None:
        return None
    try:
        page = _decoder.decode(data)
    except _errors:
        return None
    meta = page.metadata
    if meta is None:
        return page.items or [], None, None
    return page.items or [], meta.resourceVersion, meta.continue_ or None


def slice_from_struct(obj: Any) -> SliceInfo | None:
    """One decoded slice as :class:`SliceInfo`: what ``slice_info`` gives for its JSON."""
    meta = obj.metadata
    labels = meta.labels
    service = labels.get(SERVICE_NAME_LABEL) if labels else None
    if not service or obj.addressType not in ("IPv4", "IPv6"):
        return None
    intern = sys.intern
    endpoints: list[Endpoint] = []
    append = endpoints.append
    for ep in obj.endpoints or ():
        addresses = ep.addresses
        if not addresses:
            continue
        conditions = ep.conditions
        if conditions is None:
            ready, serving, terminating = _DEFAULT_CONDITIONS
        else:
            ready = conditions.ready is not False
            serving = conditions.serving is not False
            terminating = conditions.terminating is True
        target = ep.targetRef
        zone = ep.zone
        node = ep.nodeName
        rest = (ready, serving, terminating, ep.hostname or None,
                intern(zone) if zone else None, intern(node) if node else None,
                target.name if target is not None else None)
        if len(addresses) == 1:  # the usual case: no list to deduplicate
            address = canonical_address(addresses[0])
            if address is not None:
                append(_new(Endpoint, (address, *rest)))
        else:
            for address in ip_list(addresses):
                append(_new(Endpoint, (address, *rest)))
    ports = tuple(
        Port(p.name or "", p.port, protocol_of(p.protocol))
        for p in obj.ports or ()
        if p.port is not None
    )
    return SliceInfo(
        namespace=intern(meta.namespace),
        name=meta.name,
        service=intern(service),
        endpoints=tuple(endpoints),
        ports=ports,
    )
