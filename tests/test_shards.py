"""The candidate store spread over several Redis nodes: three independent servers, and a
three-node Redis Cluster whose shards are namespaces with their own hash tag."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from devservers.redis import RedisServer, ServerStartError, redis_executable
from schedules import lite_queue
from schedules.candidates import CandidateStore
from schedules.config import SchedulerConfig, TierConfig
from schedules.dispatch import dispatch
from schedules.keys import KeyMap
from schedules.leases import complete_batch, reap, release
from schedules.reconcile import missing_from_redis
from schedules.shard import Shard, Shards
from schedules.tick import run_tick, take_across
from store.analysis import PendingEvent
from tests.clock import store_at
from vigil.vocabulary import EventStatus, Tier

pytestmark = pytest.mark.integration

WIDE = TierConfig("standard", 1, plan_rate_per_min=60_000, plan_burst=1000, home_share=1.0)
CONFIG = SchedulerConfig(tiers={"standard": WIDE}, k_per_tick=64, candidate_ttl_s=60)
NODES = 3


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(100):
        port = random.randint(20_000, 30_000)
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _servers(root: Path, name: str, options: dict[str, str]) -> list[RedisServer]:
    servers = []
    for i in range(NODES):
        flags = {"--appendonly": "no", **{k: v.format(i=i, root=root) for k, v in options.items()}}
        server = RedisServer(root / f"{name}{i}", options=flags)
        for attempt in range(3):  # a probed port can be taken before the server binds it
            if "--cluster-enabled" in flags:
                server.port = _cluster_port()
            try:
                server.start()
                break
            except ServerStartError:
                if attempt == 2:
                    raise
        servers.append(server)
    return servers


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[redis.Redis]]:
    servers = _servers(tmp_path_factory.mktemp("shards"), "node", {})
    clients = [redis.Redis(port=s.port, decode_responses=True) for s in servers]
    yield clients
    for client, server in zip(clients, servers, strict=True):
        client.close()
        server.stop()


@pytest.fixture
def shards(nodes: list[redis.Redis]) -> Shards:
    for client in nodes:
        client.flushdb()
    return Shards([Shard(client) for client in nodes])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    root = tmp_path_factory.mktemp("cluster")
    flags = {
        "--cluster-enabled": "yes",
        "--cluster-config-file": "{root}/nodes{i}.conf",
        # a busy 2-core machine must never make the nodes declare each other failed
        "--cluster-node-timeout": "60000",
    }
    servers = _servers(root, "cluster", flags)
    addresses = [f"127.0.0.1:{s.port}" for s in servers]
    cli = [str(redis_executable("redis-cli")), "--cluster", "create", *addresses, "--cluster-yes"]
    subprocess.run(cli, check=True, capture_output=True, timeout=60)
    nodes = [redis.Redis(port=s.port, decode_responses=True) for s in servers]
    deadline = time.monotonic() + 30
    # every node, not just one, must see all slots served before the first command
    while any(node.execute_command("CLUSTER INFO")["cluster_state"] != "ok" for node in nodes):
        assert time.monotonic() < deadline, "the cluster did not come up"
        time.sleep(0.1)
    for node in nodes:
        node.close()
    client = RedisCluster(host="127.0.0.1", port=servers[0].port, decode_responses=True)
    yield client
    client.close()
    for server in servers:
        server.stop()


def add_many(store: CandidateStore, homes: int, per_home: int) -> dict[str, float]:
    """Candidates with distinct scores; returns event -> score."""
    scores = {}
    for h in range(homes):
        for j in range(per_home):
            event, score = f"e{h}x{j}", ((h * 7919 + j * 104729) % 10007) / 10007
            store.add(f"h{h}", event, "standard", score)
            scores[event] = score
    return scores


def test_homes_route_stably_and_spread_over_every_shard(shards):
    homes = [str(h) for h in range(300)]
    placed = [shards.index_of(h) for h in homes]
    assert placed == [shards.index_of(h) for h in homes]
    assert {i: placed.count(i) for i in range(NODES)} == pytest.approx(
        {i: 100 for i in range(NODES)}, abs=30
    )
    store = CandidateStore(shards, CONFIG)
    for h in homes:
        store.add(h, f"e{h}", "standard", 0.5)
    for i, shard in enumerate(shards):
        assert shard.client.zcard("idx:cand:standard") == placed.count(i)


def test_a_sharded_tick_takes_the_same_best_events_as_one_node(shards):
    store = CandidateStore(shards, CONFIG)
    scores = add_many(store, homes=60, per_home=4)
    best = sorted(scores, key=scores.__getitem__, reverse=True)
    sent: list[str] = []
    report = run_tick(shards, CONFIG, lambda: 50, lambda _t, b: sent.extend(d.event_id for d in b))
    assert report.dispatched == {"standard": 50}
    assert sorted(sent) == sorted(best[:50])  # the global top 50, whatever shard held them
    assert store.pending_total("standard") == len(scores) - 50
    assert sum(s.client.zcard("inflight") for s in shards) == 50


def test_leases_end_on_their_homes_shard_with_or_without_the_home(shards):
    store = CandidateStore(shards, CONFIG)
    add_many(store, homes=12, per_home=1)
    taken = take_across(shards, WIDE, CONFIG, 12)
    assert len(taken) == 12 and len({shards.index_of(d.home_id) for d in taken}) == NODES
    with_home = {d.event_id: d.home_id for d in taken[:3]}
    assert complete_batch(shards, [d.event_id for d in taken[:6]], with_home) == 6
    leased = {e for s in shards for e in s.client.zrange("inflight", 0, -1)}
    assert leased == {d.event_id for d in taken[6:]}
    assert release(shards, CONFIG, [d.event_id for d in taken[6:9]]) == 3
    assert store.pending_total("standard") == 3
    expired = [e.event_id for e in store_at(store, 3_600_000).expire_due()]
    assert sorted(expired) == sorted(d.event_id for d in taken[6:9])
    late = Shards([Shard(s.client, clock_offset_ms=3_600_000) for s in shards])
    assert sorted(r.event_id for r in reap(late, CONFIG).returned) == sorted(
        d.event_id for d in taken[9:]
    )


def test_lite_queue_and_reconcile_read_every_shard(shards):
    store = CandidateStore(shards, CONFIG)
    for h in range(9):
        store.add(str(h), str(100 + h), "standard", 0.5, lite=True)
    assert lite_queue.waiting(shards) == 9
    assert sorted(lite_queue.take(shards, 20)) == list(range(100, 109))
    store.remove("3", "103")
    pending = [
        PendingEvent(100 + h, h, EventStatus.QUEUED, Tier.STANDARD, 0.5, "door", "away", 0.5, False)
        for h in range(9)
    ]
    assert [e.id for e in missing_from_redis(shards, pending)] == [103]


def test_every_script_runs_on_a_redis_cluster_when_each_shard_has_a_hash_tag(cluster):
    for key in cluster.keys(target_nodes=RedisCluster.ALL_NODES):
        cluster.delete(key)
    shards = Shards([Shard(cluster, KeyMap(f"vigil{{s{i}}}:")) for i in range(4)])
    store = CandidateStore(shards, CONFIG)
    scores = add_many(store, homes=20, per_home=2)
    assert store.update_score("h1", "e1x0", 0.999)
    assert store.remove("h2", "e2x1")
    report = run_tick(shards, CONFIG, lambda: 10, lambda _t, _b: None)
    assert report.dispatched == {"standard": 10}
    assert store.pending_total("standard") == len(scores) - 11
    leased = [e for s in shards for e in cluster.zrange(s.keys.inflight, 0, -1)]
    assert "e1x0" in leased  # rescored to the top
    assert complete_batch(shards, leased[:5]) == 5
    assert release(shards, CONFIG, leased[5:7]) == 2
    late = Shards([Shard(cluster, s.keys, clock_offset_ms=3_600_000) for s in shards])
    assert len(reap(late, CONFIG).returned) == 3
    # the 2 released are candidates again; the 3 reaped were given a fresh TTL just now
    assert len(CandidateStore(late, CONFIG).expire_due()) == len(scores) - 1 - 10 + 2
    slots = {cluster.keyslot(k) for k in cluster.keys(target_nodes=RedisCluster.ALL_NODES)}
    assert slots <= {cluster.keyslot(f"s{i}") for i in range(4)}


def test_without_a_hash_tag_a_cluster_refuses_the_cross_home_step(cluster):
    store = CandidateStore(Shard(cluster), CONFIG)
    with pytest.raises(RedisClusterException):
        for h in range(20):
            store.add(f"h{h}", f"e{h}", "standard", 0.5)
        dispatch(Shard(cluster), WIDE, CONFIG, 10)
