"""The warm-start snapshot is encoded frame by frame, and reads back exactly.

The pickler writes to a Python-level sink one frame at a time, so the thread
that saves a large snapshot lets the serving loop take the GIL between frames
(``pickle.dumps`` held it for the whole body). The bytes must be those of
``pickle.dumps``, and decode to the same clusters.
"""

from __future__ import annotations

import pickle

from feddns.model.services import ClusterSnapshot, Endpoint, Port, Service
from feddns.sources import snapshot


def big_cluster(name: str, services: int, endpoints: int) -> snapshot.SavedCluster:
    svcs = [Service("bench", f"svc-{i}", cluster_ips=(f"10.96.{i // 256}.{i % 256}",),
                    ports=(Port("http", 80),),
                    endpoints=tuple(Endpoint(f"10.{i % 200}.{e // 256}.{e % 256}", zone="z1",
                                             node=f"node-{e % 7}", target=f"pod-{i}-{e}")
                                    for e in range(endpoints)))
            for i in range(services)]
    return snapshot.SavedCluster(ClusterSnapshot.from_services(name, svcs), 1000.0)


def test_a_large_snapshot_is_written_in_frames_with_the_bytes_of_dumps(monkeypatch) -> None:
    clusters = {"east": big_cluster("east", 50, 100), "west": big_cluster("west", 20, 10)}
    frames: list[int] = []
    real_write = snapshot._Frames.write

    def counting(self: snapshot._Frames, data: bytes) -> int:
        frames.append(len(data))
        return real_write(self, data)

    monkeypatch.setattr(snapshot._Frames, "write", counting)
    data = snapshot.encode(clusters, federation="fed", wall=2000.0)
    assert len(frames) > 3, "written in frames, not in one piece"
    body = data.split(b"\n", 1)[1]
    assert body == pickle.dumps(pickle.loads(body), protocol=5)
    federation, wall, decoded = snapshot.decode(data)
    assert (federation, wall) == ("fed", 2000.0)
    for name, saved in clusters.items():
        assert dict(decoded[name].snapshot.services) == dict(saved.snapshot.services)
