"""In-repo fake Kubernetes API server used by feddns integration tests.

Real HTTP on 127.0.0.1, standard library only, driven by the unmodified
``kubernetes`` client; see ``tests.fakekube.server`` for the protocol details
and fault switches, ``builders`` for object factories and ``federation`` /
``fixtures`` for multi-cluster setups.
"""

from tests.fakekube.builders import (
    SERVICE_NAME_LABEL,
    make_endpoint,
    make_endpointslice,
    make_namespace,
    make_service,
    make_serviceexport,
)
from tests.fakekube.federation import FakeFederation
from tests.fakekube.server import RESOURCE_TYPES, FakeCluster, status_body, write_kubeconfig

__all__ = [
    "RESOURCE_TYPES",
    "SERVICE_NAME_LABEL",
    "FakeCluster",
    "FakeFederation",
    "make_endpoint",
    "make_endpointslice",
    "make_namespace",
    "make_service",
    "make_serviceexport",
    "status_body",
    "write_kubeconfig",
]
