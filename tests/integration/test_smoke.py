"""The demo answers over UDP and TCP, like the README says."""

from tests.support import ask, make_query, records


def test_demo_web_service_answers_its_three_cluster_ips_over_udp_and_tcp(demo_server):
    for tcp in (False, True):
        reply = ask(demo_server.port, make_query("web.shop.svc.clusterset.local", "A"), tcp=tcp)
        assert reply.rcode() == 0
        assert records(reply) == [
            "web.shop.svc.clusterset.local. 5 IN A 10.96.1.10",
            "web.shop.svc.clusterset.local. 5 IN A 10.96.2.10",
            "web.shop.svc.clusterset.local. 5 IN A 10.96.3.10",
        ]
