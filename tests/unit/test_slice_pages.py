"""LIST pages of EndpointSlices decoded by msgspec convert exactly as the JSON dict path does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feddns.sources.kubernetes import slicepages
from feddns.sources.kubernetes.converting import slice_info
from feddns.sources.kubernetes.slicepages import decode_slice_page, slice_from_struct
from tests.fakekube import make_endpointslice

pytestmark = pytest.mark.skipif(not slicepages.AVAILABLE, reason="msgspec not installed")


def page(*slices: dict[str, Any], rv: str = "42", token: str | None = None) -> bytes:
    meta: dict[str, Any] = {"resourceVersion": rv}
    if token is not None:
        meta["continue"] = token
    return json.dumps({"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                       "metadata": meta, "items": list(slices)}).encode()


def both_ways(data: bytes) -> tuple[list[Any] | None, list[Any]]:
    """(msgspec path's conversions or None if it declined, the dict path's)."""
    decoded = decode_slice_page(data)
    fast = None if decoded is None else [slice_from_struct(s) for s in decoded[0]]
    return fast, [slice_info(obj) for obj in json.loads(data)["items"]]


def test_a_controller_written_page_takes_the_struct_path_and_converts_the_same() -> None:
    eps = [{"addresses": [f"10.0.0.{i}"], "conditions": {"ready": i % 2 == 0},
            "zone": "z1", "nodeName": f"n{i}", "hostname": "h" if i == 3 else None,
            "targetRef": {"kind": "Pod", "name": f"pod-{i}"}} for i in range(5)]
    v6 = [{"addresses": ["fd00::1"], "conditions": {"terminating": True, "serving": True}}]
    data = page(make_endpointslice("ns", "a-1", "a", endpoints=eps,
                                   ports=[{"name": "http", "port": 80},
                                          {"port": 53, "protocol": "UDP"}]),
                make_endpointslice("ns", "a-2", "a", address_type="IPv6", endpoints=v6),
                make_endpointslice("ns", "fq", "a", address_type="FQDN",
                                   endpoints=[{"addresses": ["db.example.com"]}]),
                token="next")
    decoded = decode_slice_page(data)
    assert decoded is not None
    assert decoded[1:] == ("42", "next")
    fast, slow = both_ways(data)
    assert fast == slow
    assert slow[2] is None and slow[0] is not None and len(slow[0].endpoints) == 5


def test_empty_strings_and_unusual_spellings_convert_as_the_dict_path_does() -> None:
    eps = [
        {"addresses": ["10.0.0.1"], "hostname": "", "zone": "", "nodeName": "",
         "targetRef": {"name": ""}},
        {"addresses": ["None"]}, {"addresses": [""]}, {"addresses": []},
        {"addresses": ["FD00:0::1"], "conditions": {"ready": None, "serving": False}},
        {"addresses": ["010.1.1.1"]},
        {"addresses": ["10.0.0.2", "10.0.0.2", "bad", "fd00::2"], "zone": "z1"},
    ]
    data = page(make_endpointslice("ns", "a-1", "a", endpoints=eps,
                                   ports=[{"port": 80, "protocol": "tcp"},
                                          {"name": "", "port": 53, "protocol": "UDP"}]))
    fast, slow = both_ways(data)
    assert fast is not None
    assert fast == slow
    assert slow[0] is not None
    first = slow[0].endpoints[0]
    assert (first.hostname, first.zone, first.node) == (None, None, None)


def test_a_page_with_one_odd_record_is_left_to_the_lenient_dict_path() -> None:
    odd = make_endpointslice("ns", "b-1", "b", endpoints=[
        {"addresses": ["10.0.0.1"], "conditions": {"ready": "yes"}},  # bool("yes")
        {"addresses": ["10.0.0.2", None, "010.0.0.3"]},
    ])
    assert decode_slice_page(page(make_endpointslice("ns", "a-1", "a"), odd)) is None


def test_no_page_metadata_and_a_broken_body_are_handled() -> None:
    assert decode_slice_page(b'{"items": []}') == ([], None, None)
    assert decode_slice_page(b'{"items": [') is None
    assert decode_slice_page(b"[]") is None


_text = st.one_of(st.none(), st.sampled_from(["", "None", "z1", "node-1", "x" * 70]))
_typed_address = st.one_of(
    st.sampled_from(["10.0.0.1", "10.0.0.1", "fd00::1", "FD00::1", "fd00:0::1", "010.1.1.1",
                     "", "None", "bad", "1.2.3.4.5", "::ffff:10.0.0.1", "10.0.0.1\x00"]),
    st.ip_addresses().map(str),
)


def _endpoints(odd: bool) -> st.SearchStrategy[Any]:
    """Endpoints with the API's types (edge values included), or with odd types too."""
    flag = st.one_of(st.none(), st.booleans(), *([st.sampled_from(["yes", 0, 1])] * odd))
    text = st.one_of(_text, *([st.integers()] * odd))
    address = st.one_of(_typed_address, *([st.integers(), st.none()] * odd))
    conditions = st.one_of(
        st.none(), *([st.just([])] * odd),
        st.fixed_dictionaries({}, optional={"ready": flag, "serving": flag,
                                            "terminating": flag}),
    )
    target = st.one_of(st.none(), *([st.just("pod")] * odd), st.fixed_dictionaries(
        {}, optional={"name": text, "kind": st.just("Pod")}))
    endpoint = st.fixed_dictionaries({}, optional={
        "addresses": st.one_of(st.none(), st.lists(address, max_size=3)),
        "conditions": conditions, "hostname": text, "zone": text, "nodeName": text,
        "targetRef": target,
    })
    return st.one_of(endpoint, *([st.just("not an object")] * odd))


def _ports(odd: bool) -> st.SearchStrategy[Any]:
    number = st.one_of(st.none(), st.integers(0, 70000),
                       *([st.booleans(), st.just(1.5)] * odd))
    port = st.fixed_dictionaries({}, optional={
        "name": st.one_of(_text, *([st.integers()] * odd)), "port": number,
        "protocol": st.sampled_from(["TCP", "UDP", "SCTP", "tcp", None, ""]),
    })
    return st.one_of(port, *([st.just(7)] * odd))


@st.composite
def _slices(draw: st.DrawFn, odd: bool) -> dict[str, Any]:
    labels = draw(st.one_of(
        st.none(), st.just({}),
        st.fixed_dictionaries({"kubernetes.io/service-name": st.sampled_from(["svc", ""])}),
        st.just({"kubernetes.io/service-name": "svc", "other": "x"}),
    ))
    obj: dict[str, Any] = {"metadata": {"namespace": draw(st.sampled_from(["ns", "other"])),
                                        "name": draw(st.sampled_from(["s-1", "s-2"])),
                                        "labels": labels}}
    obj["addressType"] = draw(st.sampled_from(["IPv4", "IPv6", "FQDN", None]))
    obj["endpoints"] = draw(st.one_of(st.none(), st.lists(_endpoints(odd), max_size=5)))
    obj["ports"] = draw(st.one_of(st.none(), st.lists(_ports(odd), max_size=3)))
    return obj


@settings(max_examples=300, deadline=None)
@given(st.lists(_slices(odd=False), max_size=4))
def test_a_page_with_the_apis_types_takes_the_struct_path_and_converts_the_same(
        slices: list[dict[str, Any]]) -> None:
    fast, slow = both_ways(page(*slices))
    assert fast is not None
    assert fast == slow


@settings(max_examples=300, deadline=None)
@given(st.lists(_slices(odd=True), max_size=4))
def test_whenever_the_struct_path_takes_an_odd_page_it_converts_it_as_the_dict_path(
        slices: list[dict[str, Any]]) -> None:
    fast, slow = both_ways(page(*slices))
    if fast is not None:
        assert fast == slow
