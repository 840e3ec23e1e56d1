"""Integration tests for the in-repo fake Kubernetes API server (``tests.fakekube``).

The fake only earns its keep if the REAL, unmodified ``kubernetes`` client
(37.0.2 here) behaves against it the way it behaves against a real API server,
so every test drives that client over real HTTP on 127.0.0.1.

Observed client behaviour these tests pin down (later feddns tests rely on it):

* 410 Gone: the fake answers a watch from a too-old resourceVersion with HTTP
  200 and one ``ERROR`` event carrying a 410 ``Expired`` Status.
  ``Watch.stream`` never yields that event: it raises
  ``kubernetes.client.ApiException`` with ``status == 410`` (reason
  ``"Expired: too old resource version: X (Y)"``).  With ``timeout_seconds``
  it raises on the first request; without it, it silently retries once with
  the same resourceVersion (two watch requests) and then raises.  A paginated
  LIST whose continue token predates ``expire_history()`` raises
  ``ApiException`` 410 directly.
* ``drop_watches()``: the stream raises ``urllib3.exceptions.ProtocolError``
  ("Connection broken: IncompleteRead(...)"); ``Watch.stream`` does not retry.
* ``partition()``: an open watch with ``_request_timeout=1`` raises
  ``urllib3.exceptions.ReadTimeoutError`` about 1 s after the last byte.  Note
  that a *number* ``_request_timeout`` is a per-read socket timeout for the
  whole stream, so an idle, healthy watch times out too; a new request during a
  partition raises ``MaxRetryError`` (caused by ``ReadTimeoutError``) after
  ``(retries + 1) * timeout`` - urllib3 retries read timeouts 3 times by
  default, so 1 s becomes 4 s unless ``Configuration.retries`` is lowered.
* ``refuse()``: requests raise ``urllib3.exceptions.MaxRetryError`` caused by
  ``NewConnectionError`` (connection refused), immediately.
* ``fail_next(status=500)`` → ``ApiException`` (``ServiceException``) 500;
  401 → ``UnauthorizedException``; 403 → ``ForbiddenException``; all are
  ``ApiException`` subclasses with ``.status`` set.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.fakekube import (
    SERVICE_NAME_LABEL,
    FakeCluster,
    FakeFederation,
    make_endpoint,
    make_endpointslice,
    make_service,
    make_serviceexport,
)

pytest_plugins = ["tests.fakekube.fixtures"]

MCS = ("multicluster.x-k8s.io", "v1alpha1", "serviceexports")


def load_api_client(
    kubeconfig: Path, context: str | None = None, *, retries: Any = None
) -> client.ApiClient:
    """Build an ApiClient from a kubeconfig without touching the global default config."""
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), context=context, client_configuration=cfg)
    if retries is not None:
        cfg.retries = retries
    return client.ApiClient(cfg)


class WatchRecorder:
    """Run ``watch.Watch().stream(func, **kwargs)`` in a thread and queue what it yields."""

    END = "END"

    def __init__(self, func: Any, *args: Any, **kwargs: Any) -> None:
        self.watch = watch.Watch()
        self.items: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(func, args, kwargs), daemon=True)
        self.thread.start()

    def _run(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            for event in self.watch.stream(func, *args, **kwargs):
                self.items.put(event)
            self.items.put(self.END)
        except Exception as exc:  # handed to the test thread
            self.items.put(exc)

    def next(self, timeout: float = 5.0) -> Any:
        return self.items.get(timeout=timeout)

    def next_event(self, timeout: float = 5.0) -> dict[str, Any]:
        item = self.next(timeout)
        if not isinstance(item, dict):
            raise AssertionError(f"expected a watch event, got {item!r}")
        return item

    def close(self) -> None:
        self.watch.stop()
        self.thread.join(timeout=5.0)


def first_events(n: int, func: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Stream a watch (bounded by timeoutSeconds=5) and return its first ``n`` events."""
    stream = watch.Watch()
    events = []
    for event in stream.stream(func, *args, timeout_seconds=5, **kwargs):
        events.append(event)
        if len(events) == n:
            stream.stop()
    return events


@pytest.fixture
def api(fake_cluster: FakeCluster) -> Iterator[client.ApiClient]:
    api_client = load_api_client(fake_cluster.kubeconfig, "east")
    yield api_client
    api_client.close()


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def discovery(api: client.ApiClient) -> client.DiscoveryV1Api:
    return client.DiscoveryV1Api(api)


@pytest.fixture
def recorders(fake_cluster: FakeCluster) -> Iterator[list[WatchRecorder]]:
    """Collect WatchRecorders; at teardown stop the cluster first so every stream ends."""
    started: list[WatchRecorder] = []
    yield started
    fake_cluster.stop()
    for rec in started:
        rec.close()


def raw_get(cluster: FakeCluster, path: str, token: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=5)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------- LIST


def test_listing_services_returns_typed_objects_with_kubernetes_field_names(
    fake_cluster: FakeCluster, core: client.CoreV1Api
) -> None:
    fake_cluster.apply_service(
        make_service(
            "shop",
            "web",
            type="LoadBalancer",
            cluster_ips=["10.96.0.10", "fd00::10"],
            ports=[{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}],
            lb_ips=["203.0.113.7"],
            annotations={"feddns.io/ttl": "30"},
        )
    )
    fake_cluster.apply_service(make_service("shop", "db", headless=True))

    result = core.list_service_for_all_namespaces()

    assert isinstance(result, client.V1ServiceList)
    assert int(result.metadata.resource_version) == fake_cluster.resource_version
    by_name = {s.metadata.name: s for s in result.items}
    web, db = by_name["web"], by_name["db"]
    assert isinstance(web, client.V1Service)
    assert web.metadata.namespace == "shop"
    assert web.metadata.uid
    assert web.metadata.annotations == {"feddns.io/ttl": "30"}
    assert web.spec.type == "LoadBalancer"
    assert web.spec.cluster_ip == "10.96.0.10"
    assert web.spec.cluster_ips == ["10.96.0.10", "fd00::10"]
    assert web.spec.ip_families == ["IPv4", "IPv6"]
    assert [(p.name, p.port, p.protocol) for p in web.spec.ports] == [
        ("http", 80, "TCP"),
        ("dns", 53, "UDP"),
    ]
    assert [i.ip for i in web.status.load_balancer.ingress] == ["203.0.113.7"]
    assert db.spec.cluster_ip == "None"
    assert db.spec.cluster_ips == ["None"]


def test_namespaced_service_list_only_returns_that_namespace(
    fake_cluster: FakeCluster, core: client.CoreV1Api
) -> None:
    fake_cluster.apply_service(make_service("a", "one"))
    fake_cluster.apply_service(make_service("b", "two"))

    names = [s.metadata.name for s in core.list_namespaced_service("b").items]

    assert names == ["two"]


def test_listing_endpointslices_returns_typed_endpoints_and_honours_label_selector(
    fake_cluster: FakeCluster, discovery: client.DiscoveryV1Api
) -> None:
    fake_cluster.apply_endpointslice(
        make_endpointslice(
            "shop",
            "web-x1",
            "web",
            endpoints=[
                make_endpoint(
                    "10.1.0.5", hostname="web-0", zone="z1", node_name="node-a", pod="web-0"
                ),
                {"addresses": ["10.1.0.6"], "conditions": {"ready": False, "terminating": True}},
            ],
            ports=[{"name": "http", "port": 8080}],
        )
    )
    fake_cluster.apply_endpointslice(
        make_endpointslice("shop", "db-y2", "db", endpoints=["10.1.0.9"])
    )

    result = discovery.list_endpoint_slice_for_all_namespaces(
        label_selector=f"{SERVICE_NAME_LABEL}=web"
    )

    assert [s.metadata.name for s in result.items] == ["web-x1"]
    web = result.items[0]
    assert isinstance(web, client.V1EndpointSlice)
    assert web.address_type == "IPv4"
    assert web.metadata.labels[SERVICE_NAME_LABEL] == "web"
    first, second = web.endpoints
    assert first.addresses == ["10.1.0.5"]
    assert (first.conditions.ready, first.conditions.serving, first.conditions.terminating) == (
        True,
        True,
        False,
    )
    assert (first.hostname, first.zone, first.node_name) == ("web-0", "z1", "node-a")
    assert (first.target_ref.kind, first.target_ref.name) == ("Pod", "web-0")
    assert (second.conditions.ready, second.conditions.terminating) == (False, True)
    assert [(p.name, p.port, p.protocol) for p in web.ports] == [("http", 8080, "TCP")]
    namespaced = discovery.list_namespaced_endpoint_slice("shop", label_selector="!nope")
    assert len(namespaced.items) == 2


def test_serviceexports_are_listed_and_watched_through_custom_objects_api(
    fake_cluster: FakeCluster, api: client.ApiClient
) -> None:
    custom = client.CustomObjectsApi(api)
    fake_cluster.apply_serviceexport("shop", "web")
    listed = custom.list_cluster_custom_object(*MCS)
    fake_cluster.apply_serviceexport(
        make_serviceexport("shop", "db", conditions=[{"type": "Valid", "status": "True"}])
    )
    fake_cluster.delete_serviceexport("shop", "web")

    events = first_events(
        2,
        custom.list_namespaced_custom_object,
        *MCS[:2],
        "shop",
        MCS[2],
        resource_version=listed["metadata"]["resourceVersion"],
    )

    assert listed["kind"] == "ServiceExportList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["web"]
    assert listed["items"][0]["kind"] == "ServiceExport"
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "db"),
        ("DELETED", "web"),
    ]
    assert events[0]["object"]["status"]["conditions"][0]["type"] == "Valid"


def test_namespaces_are_listed_including_ones_created_by_applied_objects(
    fake_cluster: FakeCluster, core: client.CoreV1Api
) -> None:
    fake_cluster.apply_service(make_service("payments", "api"))

    names = {n.metadata.name for n in core.list_namespace().items}

    assert {"default", "kube-system", "payments"} <= names


def test_paginated_list_returns_every_item_once_from_a_consistent_snapshot(
    fake_cluster: FakeCluster, core: client.CoreV1Api
) -> None:
    for i in range(7):
        fake_cluster.apply_service(make_service("ns", f"svc-{i}"))

    first = core.list_service_for_all_namespaces(limit=3)
    fake_cluster.apply_service(make_service("ns", "svc-9-added-mid-list"))
    names = [s.metadata.name for s in first.items]
    token = first.metadata._continue
    pages = 1
    while token:
        page = core.list_service_for_all_namespaces(limit=3, _continue=token)
        assert page.metadata.resource_version == first.metadata.resource_version
        names += [s.metadata.name for s in page.items]
        token = page.metadata._continue
        pages += 1

    assert first.metadata.remaining_item_count == 4
    assert pages == 3
    assert names == [f"svc-{i}" for i in range(7)]


def test_continue_token_older_than_expire_history_gets_410(
    fake_cluster: FakeCluster, core: client.CoreV1Api
) -> None:
    for i in range(4):
        fake_cluster.apply_service(make_service("ns", f"svc-{i}"))
    first = core.list_service_for_all_namespaces(limit=2)
    fake_cluster.expire_history()

    with pytest.raises(ApiException) as excinfo:
        core.list_service_for_all_namespaces(limit=2, _continue=first.metadata._continue)

    assert excinfo.value.status == 410
    assert json.loads(excinfo.value.body)["reason"] == "Expired"


# ---------------------------------------------------------------------------- WATCH


def test_watch_from_list_resource_version_replays_added_modified_deleted(
    fake_cluster: FakeCluster, core: client.CoreV1Api
) -> None:
    fake_cluster.apply_service(make_service("ns", "old"))
    list_rv = core.list_service_for_all_namespaces().metadata.resource_version
    fake_cluster.apply_service(make_service("ns", "web", ports=[{"port": 80}]))
    fake_cluster.apply_service(make_service("ns", "web", ports=[{"port": 8080}]))
    fake_cluster.delete_service("ns", "old")

    started = time.monotonic()
    events = list(
        watch.Watch().stream(
            core.list_service_for_all_namespaces, resource_version=list_rv, timeout_seconds=1
        )
    )

    assert 0.9 <= time.monotonic() - started < 3.0  # timeoutSeconds ends the stream cleanly
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", "web"),
        ("MODIFIED", "web"),
        ("DELETED", "old"),
    ]
    assert isinstance(events[1]["object"], client.V1Service)
    assert events[1]["object"].spec.ports[0].port == 8080
    rvs = [int(e["object"].metadata.resource_version) for e in events]
    assert rvs == sorted(rvs)
    assert rvs[-1] == fake_cluster.resource_version


def test_live_watch_receives_mutations_made_after_it_opened(
    fake_cluster: FakeCluster, discovery: client.DiscoveryV1Api, recorders: list[WatchRecorder]
) -> None:
    list_rv = discovery.list_endpoint_slice_for_all_namespaces().metadata.resource_version
    rec = WatchRecorder(
        discovery.list_namespaced_endpoint_slice,
        "shop",
        resource_version=list_rv,
        timeout_seconds=10,
        _request_timeout=10,
    )
    recorders.append(rec)
    fake_cluster.wait_for_watchers("endpointslices", 1)

    fake_cluster.apply_endpointslice(
        make_endpointslice("other", "x-1", "x", endpoints=["10.9.9.9"])
    )
    fake_cluster.apply_endpointslice(
        make_endpointslice("shop", "web-1", "web", endpoints=["10.0.0.1"])
    )
    fake_cluster.apply_endpointslice(
        make_endpointslice("shop", "web-1", "web", endpoints=["10.0.0.1", "10.0.0.2"])
    )
    fake_cluster.delete_endpointslice("shop", "web-1")

    events = [rec.next_event() for _ in range(3)]
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert all(e["object"].metadata.namespace == "shop" for e in events)
    assert [len(e["object"].endpoints) for e in events] == [1, 2, 2]
    assert isinstance(events[0]["object"], client.V1EndpointSlice)


def test_watch_without_resource_version_starts_with_synthetic_added_events(
    fake_cluster: FakeCluster, core: client.CoreV1Api
) -> None:
    fake_cluster.apply_service(make_service("ns", "a"))
    fake_cluster.apply_service(make_service("ns", "b"))

    events = first_events(2, core.list_service_for_all_namespaces)

    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
    ]


def test_watch_from_expired_resource_version_raises_api_exception_410(
    fake_cluster: FakeCluster, core: client.CoreV1Api
) -> None:
    list_rv = core.list_service_for_all_namespaces().metadata.resource_version
    fake_cluster.expire_history()

    with pytest.raises(ApiException) as with_timeout:
        list(
            watch.Watch().stream(
                core.list_service_for_all_namespaces, resource_version=list_rv, timeout_seconds=5
            )
        )
    assert fake_cluster.watch_requests["services"] == 1
    with pytest.raises(ApiException) as without_timeout:
        list(watch.Watch().stream(core.list_service_for_all_namespaces, resource_version=list_rv))

    assert with_timeout.value.status == 410
    assert without_timeout.value.status == 410
    assert f"too old resource version: {list_rv}" in with_timeout.value.reason
    # Without timeout_seconds the client retries the expired watch once before raising.
    assert fake_cluster.watch_requests["services"] == 3
    fresh_rv = core.list_service_for_all_namespaces().metadata.resource_version
    fake_cluster.apply_service(make_service("default", "after-relist"))
    resumed = first_events(1, core.list_service_for_all_namespaces, resource_version=fresh_rv)
    assert [(e["type"], e["object"].metadata.name) for e in resumed] == [("ADDED", "after-relist")]


def test_watch_older_than_the_retained_history_gets_410(
    tmp_path: Path, fake_federation_factory: Any
) -> None:
    fed = fake_federation_factory(["small"], history_limit=3)
    cluster = fed["small"]
    core = client.CoreV1Api(load_api_client(fed.kubeconfig, "small"))
    start_rv = core.list_service_for_all_namespaces().metadata.resource_version
    for i in range(5):
        cluster.apply_service(make_service("ns", f"s{i}"))
    recent_rv = str(cluster.resource_version - 2)

    with pytest.raises(ApiException) as excinfo:
        list(
            watch.Watch().stream(
                core.list_service_for_all_namespaces, resource_version=start_rv, timeout_seconds=1
            )
        )
    recent = first_events(2, core.list_service_for_all_namespaces, resource_version=recent_rv)

    assert excinfo.value.status == 410
    assert [e["object"].metadata.name for e in recent] == ["s3", "s4"]


def test_expire_history_can_terminate_open_watches_with_410(
    fake_cluster: FakeCluster, core: client.CoreV1Api, recorders: list[WatchRecorder]
) -> None:
    rv = core.list_service_for_all_namespaces().metadata.resource_version
    rec = WatchRecorder(
        core.list_service_for_all_namespaces, resource_version=rv, timeout_seconds=10
    )
    recorders.append(rec)
    fake_cluster.wait_for_watchers("services", 1)

    fake_cluster.expire_history(terminate_watches=True)

    err = rec.next()
    assert isinstance(err, ApiException)
    assert err.status == 410


# ---------------------------------------------------------------------------- auth / RBAC


def test_wrong_token_gets_401_and_rotated_token_file_works_after_reload(
    fake_cluster: FakeCluster, core: client.CoreV1Api
) -> None:
    core.list_namespace()
    new_token = fake_cluster.rotate_token()

    with pytest.raises(ApiException) as excinfo:
        core.list_namespace()
    reloaded = client.CoreV1Api(load_api_client(fake_cluster.kubeconfig, "east"))

    assert excinfo.value.status == 401
    assert json.loads(excinfo.value.body)["reason"] == "Unauthorized"
    assert fake_cluster.token_file is not None
    assert fake_cluster.token_file.read_text() == new_token
    assert reloaded.list_namespace().items


def test_previous_token_is_accepted_during_the_grace_period(
    fake_cluster: FakeCluster, core: client.CoreV1Api
) -> None:
    old_token = fake_cluster.token
    fake_cluster.rotate_token(grace_seconds=60)

    assert core.list_namespace().items
    assert raw_get(fake_cluster, "/api/v1/namespaces", old_token)[0] == 200
    assert raw_get(fake_cluster, "/api/v1/namespaces", "garbage")[0] == 401
    fake_cluster.rotate_token()
    assert raw_get(fake_cluster, "/api/v1/namespaces", old_token)[0] == 401


def test_unauthenticated_request_gets_401_status_body_but_version_is_public(
    fake_cluster: FakeCluster,
) -> None:
    status, body = raw_get(fake_cluster, "/api/v1/services")
    version_status, version_body = raw_get(fake_cluster, "/version")

    assert status == 401
    assert json.loads(body) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    assert version_status == 200
    assert json.loads(version_body)["gitVersion"].startswith("v1.")


def test_discovery_documents_are_served(fake_cluster: FakeCluster, api: client.ApiClient) -> None:
    core_versions = client.CoreApi(api).get_api_versions()
    groups = client.ApisApi(api).get_api_versions()
    version = client.VersionApi(api).get_code()

    assert core_versions.versions == ["v1"]
    assert {g.name for g in groups.groups} == {"discovery.k8s.io", "multicluster.x-k8s.io"}
    assert version.major == "1"


def test_forbid_gives_403_for_list_and_watch_until_allowed(
    fake_cluster: FakeCluster, discovery: client.DiscoveryV1Api, core: client.CoreV1Api
) -> None:
    fake_cluster.forbid("endpointslices")

    with pytest.raises(ApiException) as listed:
        discovery.list_endpoint_slice_for_all_namespaces()
    with pytest.raises(ApiException) as watched:
        list(
            watch.Watch().stream(
                discovery.list_endpoint_slice_for_all_namespaces, timeout_seconds=1
            )
        )
    core.list_service_for_all_namespaces()  # other resources are unaffected
    fake_cluster.allow("endpointslices")

    assert listed.value.status == 403
    assert json.loads(listed.value.body)["reason"] == "Forbidden"
    assert watched.value.status == 403
    assert discovery.list_endpoint_slice_for_all_namespaces().items == []


# ---------------------------------------------------------------------------- faults


def test_drop_watches_breaks_the_client_stream_with_a_protocol_error(
    fake_cluster: FakeCluster, core: client.CoreV1Api, recorders: list[WatchRecorder]
) -> None:
    rec = WatchRecorder(core.list_service_for_all_namespaces, timeout_seconds=10)
    recorders.append(rec)
    fake_cluster.wait_for_watchers("services", 1)

    assert fake_cluster.drop_watches() == 1

    err = rec.next()
    assert isinstance(err, urllib3.exceptions.ProtocolError)
    fake_cluster.wait_for_watchers("services", 0, exact=True)
    assert core.list_service_for_all_namespaces().items == []  # the server itself is fine


def test_open_watch_count_drops_when_the_client_hangs_up(
    fake_cluster: FakeCluster, core: client.CoreV1Api, recorders: list[WatchRecorder]
) -> None:
    # An idle watch with a 0.3 s read timeout: the client gives up and closes the socket.
    rec = WatchRecorder(
        core.list_service_for_all_namespaces, timeout_seconds=30, _request_timeout=0.3
    )
    recorders.append(rec)
    fake_cluster.wait_for_watchers("services", 1)

    assert isinstance(rec.next(), urllib3.exceptions.ReadTimeoutError)

    # No further event is written, so only hang-up detection can close it server-side.
    fake_cluster.wait_for_watchers("services", 0, timeout=3, exact=True)
    assert fake_cluster.watch_requests["services"] == 1


def test_partition_makes_an_open_watch_with_request_timeout_raise_within_two_seconds(
    fake_cluster: FakeCluster, core: client.CoreV1Api, recorders: list[WatchRecorder]
) -> None:
    fake_cluster.bookmark_interval = 0.2  # keeps a healthy stream busier than the 1 s timeout
    rec = WatchRecorder(
        core.list_service_for_all_namespaces,
        allow_watch_bookmarks=True,
        timeout_seconds=30,
        _request_timeout=1,
    )
    recorders.append(rec)
    fake_cluster.wait_for_watchers("services", 1)
    for _ in range(7):  # ~1.4 s of bookmarks: the stream outlives the read timeout
        assert rec.next_event()["type"] == "BOOKMARK"

    fake_cluster.partition()
    partitioned_at = time.monotonic()
    item = rec.next(timeout=5)
    while isinstance(item, dict) and item["type"] == "BOOKMARK":  # one may be in flight
        assert time.monotonic() - partitioned_at < 3.0, "bookmarks kept flowing: not silent"
        item = rec.next(timeout=5)

    assert isinstance(item, urllib3.exceptions.ReadTimeoutError)
    assert time.monotonic() - partitioned_at < 5.0  # the read timeout, not a hang
    fake_cluster.heal()


def test_partition_leaves_new_requests_unanswered_until_heal(
    fake_cluster: FakeCluster,
) -> None:
    impatient = client.CoreV1Api(load_api_client(fake_cluster.kubeconfig, "east", retries=False))
    fake_cluster.partition()

    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        impatient.list_namespace(_request_timeout=0.5)
    elapsed = time.monotonic() - started
    seen_by_server = fake_cluster.list_requests["namespaces"]
    fake_cluster.heal()

    assert 0.4 <= elapsed < 5.0  # the client's own timeout ended it, nothing else
    assert seen_by_server == 1  # the request was read, just never answered
    assert impatient.list_namespace(_request_timeout=5).items


def test_refuse_makes_connections_fail_and_accept_restores_them_on_the_same_port(
    fake_cluster: FakeCluster, core: client.CoreV1Api, recorders: list[WatchRecorder]
) -> None:
    port = fake_cluster.port
    rec = WatchRecorder(core.list_service_for_all_namespaces, timeout_seconds=10)
    recorders.append(rec)
    fake_cluster.wait_for_watchers("services", 1)

    fake_cluster.refuse()

    with pytest.raises(urllib3.exceptions.MaxRetryError) as excinfo:
        core.list_namespace(_request_timeout=2)
    assert isinstance(excinfo.value.reason, urllib3.exceptions.NewConnectionError)
    assert isinstance(rec.next(), urllib3.exceptions.ProtocolError)  # open watch was cut
    fake_cluster.accept()
    assert fake_cluster.port == port
    assert core.list_namespace(_request_timeout=5).items


def test_fail_next_gives_500_api_exception_then_recovers(
    fake_cluster: FakeCluster, core: client.CoreV1Api
) -> None:
    fake_cluster.fail_next(2, status=500)

    statuses = []
    for _ in range(2):
        with pytest.raises(ApiException) as excinfo:
            core.list_service_for_all_namespaces()
        statuses.append(excinfo.value.status)

    assert statuses == [500, 500]
    assert json.loads(excinfo.value.body)["code"] == 500
    assert core.list_service_for_all_namespaces().items == []


def test_fail_next_can_target_one_resource(
    fake_cluster: FakeCluster, core: client.CoreV1Api, discovery: client.DiscoveryV1Api
) -> None:
    fake_cluster.fail_next(1, status=503, resource="endpointslices")

    core.list_service_for_all_namespaces()
    with pytest.raises(ApiException) as excinfo:
        discovery.list_endpoint_slice_for_all_namespaces()

    assert excinfo.value.status == 503
    assert discovery.list_endpoint_slice_for_all_namespaces().items == []


def test_bookmarks_arrive_only_on_watches_that_asked_for_them(
    fake_cluster: FakeCluster, core: client.CoreV1Api, recorders: list[WatchRecorder]
) -> None:
    with_bookmarks = WatchRecorder(
        core.list_service_for_all_namespaces, allow_watch_bookmarks=True, timeout_seconds=10
    )
    without = WatchRecorder(core.list_service_for_all_namespaces, timeout_seconds=10)
    recorders += [with_bookmarks, without]
    fake_cluster.wait_for_watchers("services", 2)

    rv_at_bookmark = fake_cluster.resource_version
    assert fake_cluster.send_bookmark() == 1
    bookmark = with_bookmarks.next_event()
    rv_seen_by_client = with_bookmarks.watch.resource_version
    fake_cluster.apply_service(make_service("ns", "after-bookmark"))

    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["raw_object"]["kind"] == "Service"
    assert bookmark["raw_object"]["metadata"]["resourceVersion"] == str(rv_at_bookmark)
    assert rv_seen_by_client == bookmark["raw_object"]["metadata"]["resourceVersion"]
    assert without.next_event()["type"] == "ADDED"  # no BOOKMARK was queued before it
    assert with_bookmarks.next_event()["type"] == "ADDED"


def test_two_clusters_run_at_once_with_a_combined_kubeconfig(
    fake_federation: FakeFederation,
) -> None:
    east, west = fake_federation["east"], fake_federation["west.prod"]
    east.apply_service(make_service("ns", "only-in-east"))
    west.apply_service(make_service("ns", "only-in-west"))

    contexts, current = config.list_kube_config_contexts(
        config_file=str(fake_federation.kubeconfig)
    )
    listed = {
        name: [
            s.metadata.name
            for s in client.CoreV1Api(load_api_client(fake_federation.kubeconfig, name))
            .list_service_for_all_namespaces()
            .items
        ]
        for name in ("east", "west.prod")
    }

    assert east.port != west.port
    assert sorted(c["name"] for c in contexts) == ["east", "west.prod"]
    assert current["name"] == "east"
    assert listed == {"east": ["only-in-east"], "west.prod": ["only-in-west"]}


# ---------------------------------------------------------------------------- perf & lifecycle


def test_a_list_of_20000_endpoints_is_served_in_well_under_a_second(
    fake_cluster: FakeCluster, discovery: client.DiscoveryV1Api
) -> None:
    for s in range(200):
        fake_cluster.apply_endpointslice(
            make_endpointslice(
                "big",
                f"svc{s}-abcde",
                f"svc{s}",
                endpoints=[
                    make_endpoint(f"10.{s}.{i // 250}.{i % 250}", hostname=f"pod-{i}", zone="z1")
                    for i in range(100)
                ],
                ports=[{"name": "http", "port": 8080}],
            )
        )

    started = time.monotonic()
    raw = discovery.list_endpoint_slice_for_all_namespaces(_preload_content=False)
    body = raw.read()
    served_in = time.monotonic() - started
    typed = discovery.list_endpoint_slice_for_all_namespaces()

    assert served_in < 1.0
    assert len(json.loads(body)["items"]) == 200
    assert sum(len(s.endpoints) for s in typed.items) == 20_000


def test_thousands_of_watch_events_stream_quickly(tmp_path: Path) -> None:
    with FakeCluster("busy", history_limit=5000) as cluster:
        api_client = load_api_client(cluster.write_kubeconfig(tmp_path / "kc"))
        core = client.CoreV1Api(api_client)
        start_rv = core.list_service_for_all_namespaces().metadata.resource_version
        for i in range(3000):
            cluster.apply_service(make_service("ns", f"svc-{i % 100}", ports=[{"port": i + 1}]))

        started = time.monotonic()
        seen = 0
        stream = watch.Watch()
        for _ in stream.stream(
            core.list_service_for_all_namespaces,
            resource_version=start_rv,
            timeout_seconds=10,
            deserialize=False,
        ):
            seen += 1
            if seen == 3000:
                stream.stop()
        elapsed = time.monotonic() - started
        api_client.close()

    assert seen == 3000
    assert elapsed < 15.0  # streamed, not one event per poll interval


def test_stop_unblocks_hung_requests_and_leaves_no_server_threads(tmp_path: Path) -> None:
    cluster = FakeCluster("stopper").start()
    core = client.CoreV1Api(load_api_client(cluster.write_kubeconfig(tmp_path / "kc")))
    rec = WatchRecorder(core.list_service_for_all_namespaces, timeout_seconds=30)
    cluster.wait_for_watchers("services", 1)
    cluster.partition()
    hung = WatchRecorder(core.list_namespace, timeout_seconds=30)
    cluster.wait_until(lambda: cluster.watch_requests["namespaces"] == 1)

    started = time.monotonic()
    cluster.stop()
    stop_took = time.monotonic() - started

    assert stop_took < 2.0
    assert cluster.server_threads() == []
    assert isinstance(hung.next(), Exception)
    assert isinstance(rec.next(), Exception)
    assert cluster.open_watches() == 0


def test_stopped_cluster_restarts_on_the_same_port_with_its_state(tmp_path: Path) -> None:
    cluster = FakeCluster("phoenix").start()
    try:
        port = cluster.port
        cluster.apply_service(make_service("ns", "survivor"))
        cluster.stop()
        cluster.start()
        core = client.CoreV1Api(load_api_client(cluster.write_kubeconfig(tmp_path / "kc")))

        names = [s.metadata.name for s in core.list_service_for_all_namespaces().items]
    finally:
        cluster.stop()

    assert cluster.port == port
    assert names == ["survivor"]


async def test_fake_cluster_is_usable_from_async_tests(
    fake_cluster: FakeCluster, core: client.CoreV1Api, recorders: list[WatchRecorder]
) -> None:
    rec = WatchRecorder(core.list_service_for_all_namespaces, timeout_seconds=10)
    recorders.append(rec)
    await fake_cluster.wait_for_watchers_async("services", 1)

    fake_cluster.apply_service(make_service("ns", "async-svc"))
    event = await asyncio.to_thread(rec.next_event)
    listed = await asyncio.to_thread(core.list_service_for_all_namespaces)

    assert (event["type"], event["object"].metadata.name) == ("ADDED", "async-svc")
    assert [s.metadata.name for s in listed.items] == ["async-svc"]
