"""The core's frozen configuration, built from ``Settings``.

Why it exists: the answer table, the policy and the transports take small
frozen records of exactly what they read, not the whole configuration tree,
so the core does not depend on how the file is parsed; this is the one place
that translates one into the other (at start and on every reload).
"""

from __future__ import annotations

import ipaddress

from feddns.config import Settings
from feddns.policy.health import Damping, Isolation
from feddns.policy.locality import Locator, Place, rules_from
from feddns.table.options import (
    NameServer,
    OriginOptions,
    ServiceOverride,
    SoaOptions,
    TableOptions,
)
from feddns.table.reverse import zone_names


def table_options(settings: Settings) -> TableOptions:
    """What the answer table and its compiler read from ``settings``."""
    sel = settings.selection
    soa = settings.soa
    return TableOptions(
        origins=tuple(OriginOptions(o.name, o.service_address) for o in settings.origins),
        soa=SoaOptions(mname=soa.mname, rname=soa.rname, ttl=soa.ttl, refresh=soa.refresh,
                       retry=soa.retry, expire=soa.expire, minimum=soa.minimum),
        nameservers=tuple(NameServer(n.name, tuple(n.addresses))
                          for n in settings.nameservers),
        record_ttl=settings.dns.record_ttl,
        version_ttl=settings.dns.version_ttl,
        max_records=settings.dns.max_records,
        stale_ttl=sel.stale_ttl,
        none_healthy=sel.none_healthy,
        answer_mode=sel.answer_mode,
        subset_size=min(sel.subset_size, settings.dns.max_records),
        capacity_aware=sel.capacity_aware,
        capacity_overload=sel.capacity_overload,
        damping=Damping(sel.hold_down, sel.readmit_after),
        isolation=Isolation(sel.isolation.window, sel.isolation.fraction,
                            sel.isolation.max_hold),
        overrides=tuple(
            ServiceOverride(o.namespace, o.name,
                            tuple(o.weights.items()) if o.weights is not None else None,
                            tuple(o.regions) if o.regions is not None else None,
                            o.none_healthy,
                            tuple(o.shares.items()) if o.shares is not None else None,
                            o.answer_mode, o.capacity_aware)
            for o in settings.services),
        explain=settings.names.explain,
        explain_allow=tuple(ipaddress.ip_network(c) for c in settings.names.explain_allow),
        cluster_pinned=settings.names.cluster_pinned,
        federation_v1=settings.names.federation_v1,
        federation=settings.federation,
        regions={c.name: c.region for c in settings.clusters},
        zones={c.name: tuple(c.zones) for c in settings.clusters},
        reverse_zones=reverse_zones(settings),
    )


def reverse_zones(settings: Settings) -> tuple[str, ...]:
    """The reverse zones served: the configured networks, and the derived ones."""
    networks = list(settings.reverse.zones)
    if settings.reverse.derive:
        for cluster in settings.clusters:
            networks += [n.cidr for n in cluster.networks]
            networks += list(cluster.service_cidrs)
    return zone_names(networks)


def locator_from(settings: Settings) -> Locator:
    """The client locator from the clusters' networks and the locality section."""
    regions = {c.name: c.region for c in settings.clusters}
    rules = rules_from([
        (c.name, c.region, [(n.cidr, n.zone) for n in c.networks]) for c in settings.clusters
    ])
    local_name = settings.locality.local_cluster
    local = Place(local_name, regions.get(local_name)) if local_name else None
    trusted = [ipaddress.ip_network(n) for n in settings.locality.trusted_forwarders]
    return Locator(rules, local=local, trusted_forwarders=trusted)
