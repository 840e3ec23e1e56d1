"""List-then-watch of one resource kind, in a worker thread, with every known pitfall handled.

Why it exists: this is where outages start (see failure-modes.md §1-3), so
the loop is written once, defensively, and handed only plain callbacks:

* list (paginated), then watch from the list's resourceVersion (kopf,
  client-go Reflector);
* 410 Gone, as an HTTP status or as a watch ERROR event: re-list, and the
  re-list **replaces** what was known, so deletions missed in the gap vanish;
* every request carries a client-side read timeout, so a silent partition
  cannot hang a watch for ever (kubernetes-client/python #1402); a read
  timeout or a chunk error on an established watch is routine: re-watch from
  the last resourceVersion, without re-listing and without a state change;
* bookmarks move the resourceVersion (KEP-956) and say the source is alive;
* the first reconnection after a loss is immediate, and further attempts
  within ``fast_window`` (the selection's hold-down) come every quarter
  second, so a blip that heals within the hold-down never changes an answer;
  after that, failures back off exponentially with jitter, 0.8 s doubling to
  30 s, reset after two minutes of health (client-go's reflector numbers);
* a failed liveness probe (:mod:`.probing`) restarts the watch at once
  (:meth:`ResourceWatcher.kick`), since a silent partition would otherwise
  hold it until the read timeout;
* 401 re-reads the credentials from disk before the next try; 401 and 403
  keep the last data (the consumer is told the source is lost, never that
  there are zero endpoints).

The blocking client runs here, in a thread; results are converted to model
objects here too and handed to ``emit``, which may block (a bounded queue):
the watch then waits, which is the back-pressure we want.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import urllib3

from feddns.backoff import Backoff
from feddns.errors import FeddnsError
from feddns.sources.kubernetes.client import (
    ApiException,
    ClusterClient,
    Resource,
    describe_error,
)
from feddns.sources.kubernetes.converting import service_info, slice_info
from feddns.sources.kubernetes.slicepages import decode_slice_page, slice_from_struct

json_loads: Callable[[bytes], Any] = json.loads
"""The JSON parser: orjson's when installed (the "fast" extra; several times faster on
LIST pages, see bench/RESULTS.md), else the standard library's."""
with contextlib.suppress(ImportError):
    import orjson

    json_loads = orjson.loads

log = logging.getLogger(__name__)

LIST_PAGE = 10
"""EndpointSlices per LIST page of a re-list. A slice holds up to 100 endpoints (some
25 KB of JSON), and a page is parsed in one C call that holds the GIL: every query waits
for it. At 50 slices a page took 3-9 ms to parse (a re-list's query p99); at 20, 1-4 ms.
Measured during a 20,000-endpoint re-list at 1,000 queries/s (bench/RESULTS.md, issue
#14): query p99 6.6 ms at 20, 4.6 ms at 10 (5: 4.4 ms, no better for twice the
requests). Small pages also stop a re-list's temporary dicts from fragmenting the heap
around long-lived objects (measured: 671 instead of 1478 bytes of RSS per endpoint at
200,000 endpoints when going from 500 to 50)."""
FIRST_LIST_PAGE = 20
"""EndpointSlices per LIST page of a watcher's first list (start-up): there every page
is a request through the client, and with pages of 10 the initial sync of 200,000
endpoints was slower (``bench.k8s_memory``, 2026-12-08, alternating invocations of
three runs: 3.96, 4.11, 4.21 s at 10 against 3.34, 3.35, 3.94, 4.40 s at 20)."""
LIST_PAGE_SMALL = 10
"""Services and ServiceExports (about a kilobyte each) per LIST page, as a multiple of
the EndpointSlices' page."""
YIELD_EVERY = 64
"""Objects converted between yields of the GIL to the event loop (query latency)."""
CONVERTING = threading.Lock()
"""Held while a LIST page is decoded and converted: one watch thread of the process
does that at a time. The page is all Python work under the GIL, so running ten
clusters' pages at once gains nothing, and with the short switch interval
(:mod:`feddns.runtime.tuning`) the ten threads handed the GIL to each other every
0.2 ms: measured at the start with ten clusters of 20,000 endpoints
(``bench.k8s_memory``), 0.6-0.9 s of system time went in those hand-offs and the
sync took 2.9-4.0 s; with the lock the event loop is the only other taker. Threads
waiting for it are blocked on the lock, not on the GIL."""


@dataclass(frozen=True, slots=True)
class Relisted:
    """A complete, consistent list of ``resource`` (in ``namespace``, or all when None)."""

    resource: str
    namespace: str | None
    items: tuple[Any, ...]
    resource_version: str


@dataclass(frozen=True, slots=True)
class Changed:
    """One watch event: ``item`` added or modified, or (``deleted``) removed."""

    resource: str
    item: Any
    deleted: bool


@dataclass(frozen=True, slots=True)
class Lost:
    """The source failed; ``forbidden``/``unauthorized`` say why when the API said so."""

    resource: str
    error: str
    forbidden: bool = False
    unauthorized: bool = False


@dataclass(frozen=True, slots=True)
class Healthy:
    """A request succeeded again after a loss (the watch is established)."""

    resource: str


@dataclass(frozen=True, slots=True)
class Alive:
    """A sign of a healthy source without data (a bookmark, a liveness probe)."""

    resource: str


Event = Relisted | Changed | Lost | Healthy | Alive


class _CollectorPause:
    """Keeps the cyclic garbage collector off while any watch thread runs a LIST.

    A parsed page is some 50,000 dicts and lists that live only while it is
    converted and are freed by reference counting (JSON has no cycles); the
    collector would traverse them in the young generations and, promoted, in full
    collections of the whole growing heap, each holding the GIL: measured, a third
    to half of an initial sync's CPU (bench/RESULTS.md), and pauses of up to 18 ms
    for every query during a re-list. The pause covers the whole list, requests
    included (bounded by their timeouts), so the heap the list grows is not scanned
    between its pages either. Pauses nest across threads; the collector runs again
    once the last list is done, with only the objects made meanwhile left to look at.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.was_enabled = True

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self.lock:
            if self.depth == 0:
                self.was_enabled = gc.isenabled()
                gc.disable()
            self.depth += 1
        try:
            yield
        finally:
            with self.lock:
                self.depth -= 1
                if self.depth == 0 and self.was_enabled:
                    gc.enable()


collector_paused = _CollectorPause()


class Gone(FeddnsError):
    """The resourceVersion is too old (410): a re-list is needed."""


def _convert(resource: str, obj: dict[str, Any]) -> Any:
    if resource == Resource.SERVICES:
        return service_info(obj)
    if resource == Resource.ENDPOINTSLICES:
        return slice_info(obj)
    meta = obj.get("metadata") or {}
    return (str(meta["namespace"]), str(meta["name"]))


def _identity(resource: str, obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace")), str(meta.get("name")))


@dataclass(frozen=True, slots=True)
class Deleted:
    """The identity of a deleted object (its conversion may be None, e.g. FQDN slices)."""

    key: tuple[str, str]


class ResourceWatcher:
    """Keeps one resource kind of one cluster listed and watched, in a thread."""

    def __init__(
        self,
        client: ClusterClient,
        resource: str,
        emit: Callable[[Event], None],
        *,
        namespace: str | None = None,
        watch_timeout: float = 300.0,
        read_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        backoff_max: float = 30.0,
        fast_window: float = 0.0,
        cluster: str = "",
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.emit = emit
        self.watch_timeout = watch_timeout
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.backoff = Backoff(maximum=backoff_max, fast_window=fast_window)
        self.cluster = cluster
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name=f"watch-{cluster}-{resource}-{namespace or 'all'}",
            daemon=True,
        )
        self.lists = 0
        self.watches = 0
        self.established = False
        """True while a watch stream is open (read by the prober's thread)."""
        self._kicked = threading.Event()
        self._retry_now = threading.Event()
        self.known: dict[tuple[str, str], Any] = {}
        """The last conversion handed on per object: an equal new one is replaced by it,
        so the event loop finds identical objects after a re-list and compares nothing
        (the comparison is done here, in this thread, off the serving loop)."""

    def _same(self, converted: Any) -> Any:
        """``converted``, or the equal object handed on before for the same key."""
        key = converted if isinstance(converted, tuple) else converted.key
        old = self.known.get(key)
        return old if old is not None and old == converted else converted

    def start(self) -> None:
        """Start the worker thread."""
        self.thread.start()

    def stop(self) -> None:
        """Ask the thread to stop (it notices within the read timeout)."""
        self.stopping.set()
        self._retry_now.set()

    def kick(self) -> None:
        """Restart the current request now (another thread found the source silent).

        The socket the thread is blocked on is shut, so the request fails at
        once; the failure is reported as a loss (the cluster stays stale until
        the watch is re-established) and retried without a pause.
        """
        self._kicked.set()
        self._retry_now.set()
        ident = self.thread.ident
        if ident is not None:
            self.client.interrupt([ident])

    # --- the loop ------------------------------------------------------------

    def _run(self) -> None:
        rv: str | None = None
        lost = False
        while not self.stopping.is_set():
            try:
                if rv is None:
                    rv = self._list()
                    if lost:
                        lost = False
                        self.emit(Healthy(self.resource))
                rv = self._watch(rv, on_established=self._healthy_once if lost else _nothing)
                self.established = False
                lost = False
                self.backoff.healthy(time.monotonic())
            except Gone:
                self.established = False
                log.info("%s/%s: resourceVersion expired (410); re-listing", self.cluster,
                         self.resource)
                rv = None
            except _Routine as exc:
                self.established = False
                if self._kicked.is_set():
                    self._kicked.clear()
                    lost = True
                    self.emit(Lost(self.resource, "restarted: the liveness probe failed"))
                    continue
                # An established watch ended abnormally (chunk error, read timeout on an idle
                # stream, server closed): reconnect from the last resourceVersion.
                log.debug("%s/%s: watch interrupted (%s); resuming", self.cluster,
                          self.resource, exc)
                lost = False
            except ApiException as exc:
                self.established = False
                status = exc.status or 0
                if status == 410:
                    # api-concepts: a server "may return a HTTP 410" instead of the
                    # ERROR event; either way the resourceVersion is gone: re-list.
                    log.info("%s/%s: resourceVersion expired (HTTP 410); re-listing",
                             self.cluster, self.resource)
                    rv = None
                    continue
                lost = True
                if status == 401:
                    self.client.invalidate()
                self.emit(Lost(self.resource, f"HTTP {status} {exc.reason}",
                               forbidden=status == 403, unauthorized=status == 401))
                self._pause()
            except Exception as exc:  # any failure is a lost source, never a crash
                self.established = False
                lost = True
                error = describe_error(exc)
                if self._kicked.is_set():
                    error = "restarted: the liveness probe failed"
                self.emit(Lost(self.resource, error))
                self._pause()
        self.client.close()

    def _healthy_once(self) -> None:
        self.emit(Healthy(self.resource))

    def _pause(self) -> None:
        """Wait before the next attempt; none after a kick (the prober asked for it)."""
        if self._kicked.is_set():
            self._kicked.clear()
            self._retry_now.clear()
            return
        self._retry_now.clear()
        self._retry_now.wait(self.backoff.next_delay(time.monotonic()))
        self._kicked.clear()

    def _timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)

    def _list(self) -> str:
        # The collector stays off for the whole list (see _CollectorPause), not page
        # by page: between pages it found the heap grown by the endpoints converted so
        # far and scanned it, holding the GIL.
        with collector_paused():
            items, rv = self._pages()
            self.known = {item if isinstance(item, tuple) else item.key: item
                          for item in items}
            listed = Relisted(self.resource, self.namespace, tuple(items), rv)
            del items
        self.lists += 1
        self.backoff.healthy(time.monotonic())
        self.emit(listed)
        return rv

    def _pages(self) -> tuple[list[Any], str]:
        """Every page of one LIST, converted: ``(items, resourceVersion)``."""
        call = self.client.list_call(self.resource, self.namespace)
        items: list[Any] = []
        same = self._same
        token: str | None = None
        rv = ""
        while True:
            page = LIST_PAGE if self.lists else FIRST_LIST_PAGE
            limit = page if self.resource == Resource.ENDPOINTSLICES else \
                page * LIST_PAGE_SMALL
            kwargs: dict[str, Any] = {"limit": limit, "_preload_content": False,
                                      "_request_timeout": self._timeout()}
            if token:
                kwargs["_continue"] = token
            resp = call(**kwargs)
            try:
                data = resp.data
            finally:
                resp.release_conn()
            with CONVERTING:
                decoded = (decode_slice_page(data)
                           if self.resource == Resource.ENDPOINTSLICES else None)
                if decoded is not None:  # msgspec's structs (the common case)
                    objects, page_rv, token = decoded
                    convert: Callable[[Any], Any] = slice_from_struct
                else:  # JSON dicts: no msgspec, another resource, or an odd page
                    body = json_loads(data)
                    objects = body.get("items") or []
                    meta = body.get("metadata") or {}
                    page_rv, token = meta.get("resourceVersion"), meta.get("continue") or None
                    convert = functools.partial(_convert, self.resource)
                    del body
                for n, obj in enumerate(objects):
                    converted = convert(obj)
                    if converted is not None:
                        items.append(same(converted))
                    if n % YIELD_EVERY == 0:
                        time.sleep(0)  # let the event loop take the GIL (query latency)
                rv = str(page_rv or rv)
                del objects, decoded, data  # freed by reference counting, collector paused
            if not token:
                return items, rv

    def _watch(self, rv: str, *, on_established: Callable[[], None]) -> str:
        call = self.client.list_call(self.resource, self.namespace)
        timeout = int(self.watch_timeout * (1 + random.random()))
        resp = call(
            watch=True,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            _preload_content=False,
            _request_timeout=self._timeout(),
        )
        self.watches += 1
        self.established = True
        self._kicked.clear()  # a kick before this request had nothing to interrupt
        self.backoff.healthy(time.monotonic())  # the next loss starts a new fast window
        on_established()
        try:
            for line in _lines(resp, self.stopping):
                event = json_loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise _Routine(f"watch error event: {obj.get('message')}")
                new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                if kind == "BOOKMARK":
                    if new_rv:
                        rv = str(new_rv)
                    self.emit(Alive(self.resource))
                    continue
                if kind in ("ADDED", "MODIFIED"):
                    converted = _convert(self.resource, obj)
                    if converted is None:
                        # e.g. a slice that became FQDN-only: forget the old version of it.
                        self.known.pop(_identity(self.resource, obj), None)
                        self.emit(Changed(self.resource, Deleted(_identity(self.resource, obj)),
                                          deleted=True))
                    else:
                        converted = self._same(converted)
                        self.known[converted if isinstance(converted, tuple)
                                   else converted.key] = converted
                        self.emit(Changed(self.resource, converted, deleted=False))
                elif kind == "DELETED":
                    self.known.pop(_identity(self.resource, obj), None)
                    self.emit(Changed(self.resource, Deleted(_identity(self.resource, obj)),
                                      deleted=True))
                if new_rv:
                    rv = str(new_rv)
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise _Routine(describe_error(exc)) from exc
        finally:
            resp.release_conn()
        return rv


def _nothing() -> None:
    pass


class _Routine(FeddnsError):
    """An interruption of an established watch: resume, do not re-list."""


def _lines(resp: Any, stopping: threading.Event) -> Iterator[bytes]:
    """Split a chunked watch body into JSON lines as they arrive."""
    pending = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        if stopping.is_set():
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield line
    if pending.strip():
        yield pending
