"""Who may ask ``_explain`` names: ``names.explain_allow`` (issue #17).

The explain record shows cluster names, regions and health. With an allow-list,
a source outside it gets REFUSED, over UDP and TCP, on the fast path and the
full one (EDNS with options), and an answer given to an allowed client is never
replayed to a refused one of the same client class from the front memo (nor the
other way round).
"""

from __future__ import annotations

import dns.edns
import dns.message
import dns.rcode
import dns.rdatatype

from feddns.model.services import Endpoint, Port, Service
from tests.unit.dnscase import federation, handle, make_handler

EXPLAIN = "_explain.web.shop.svc.clusterset.local."
WEB = Service("shop", "web", cluster_ips=("10.96.0.10",), ports=(Port("http", 80),),
              endpoints=(Endpoint("10.1.0.1", zone="zone-1"),))
OPERATORS = ("10.20.0.9", 53000)
STRANGER = ("192.0.2.7", 53000)


def ask(handler: object, source: tuple[str, int], *, tcp: bool = False,
        name: str = EXPLAIN, ecs: bool = False) -> dns.message.Message:
    options = [dns.edns.ECSOption("10.20.0.0", 24)] if ecs else []
    query = dns.message.make_query(name, "TXT", use_edns=0 if ecs else None, options=options)
    reply = handle(handler, query.to_wire(), tcp, source)  # type: ignore[arg-type]
    assert reply is not None
    return dns.message.from_wire(reply)


def test_only_sources_in_the_allow_list_get_the_explain_record() -> None:
    fed = federation({"east": [WEB]}, names={"explain_allow": ["10.20.0.0/16"]})
    handler = make_handler(fed.table)
    for tcp in (False, True):
        for ecs in (False, True):
            allowed = ask(handler, OPERATORS, tcp=tcp, ecs=ecs)
            assert allowed.rcode() == dns.rcode.NOERROR and "east" in str(allowed.answer[0])
            refused = ask(handler, STRANGER, tcp=tcp, ecs=ecs)
            assert refused.rcode() == dns.rcode.REFUSED and not refused.answer
    assert handler.limits.refused == 4
    # Other names are answered to everyone, as before.
    plain = ask(handler, STRANGER, name="web.shop.svc.clusterset.local.")
    assert plain.rcode() == dns.rcode.NOERROR


def test_the_front_memo_never_replays_an_explain_answer_to_another_source() -> None:
    # Every client is in the same class here (no networks configured): one front memo.
    fed = federation({"east": [WEB]}, names={"explain_allow": ["10.20.0.0/16"]})
    handler = make_handler(fed.table)
    for _ in range(3):
        assert ask(handler, OPERATORS).rcode() == dns.rcode.NOERROR
        assert ask(handler, STRANGER).rcode() == dns.rcode.REFUSED
        assert ask(handler, ("::ffff:10.20.0.9", 53000)).rcode() == dns.rcode.NOERROR
    assert not any(b"_explain" in key
                   for front in handler.front.fronts for key in front)


def test_without_an_allow_list_every_client_gets_the_explain_record() -> None:
    fed = federation({"east": [WEB]})
    handler = make_handler(fed.table)
    reply = ask(handler, STRANGER)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer[0].rdtype == dns.rdatatype.TXT
    assert handler.limits.refused == 0
