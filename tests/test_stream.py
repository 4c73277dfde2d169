"""GET /stream: a home's live log as server-sent events, against real Redis and PostgreSQL.

The response body is a generator; tests read it chunk by chunk through the test client
(``buffered=False``), so a live entry must arrive while the request is still open.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from notify import live
from tasks.context import WorkerContext
from tasks.deep import analyse_batch
from tests.api_helpers import error_code, wait_for, worker_env
from tests.photos import photo

pytestmark = pytest.mark.integration

KEEPALIVE_S = 0.2


@pytest.fixture
def app_config() -> dict[str, Any]:
    # Short keepalive, bounded lifetime: a broken stream ends the test instead of hanging it.
    return {"STREAM_KEEPALIVE_S": KEEPALIVE_S, "STREAM_MAX_S": 5}


@dataclass
class Block:
    """One SSE block: an event (id, event, data) or a comment, or the retry hint."""

    fields: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def event(self) -> str | None:
        return self.fields.get("event")

    @property
    def id(self) -> str | None:
        return self.fields.get("id")

    @property
    def data(self) -> Any:
        return json.loads(self.fields["data"])


class SSE:
    """Reads a streaming test response block by block, as a browser's EventSource would."""

    def __init__(self, response: Any) -> None:
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.mimetype == "text/event-stream"
        self.response = response
        self._chunks = iter(response.response)
        self._buffer = ""

    def blocks(self) -> Iterator[Block]:
        for chunk in self._chunks:
            self._buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
            while "\n\n" in self._buffer:
                raw, self._buffer = self._buffer.split("\n\n", 1)
                yield _parse(raw)

    def next(self) -> Block:
        return next(self.blocks())

    def next_event(self) -> Block:
        """The next block that is an event, skipping keepalives."""
        return next(b for b in self.blocks() if b.event is not None)

    def events_until_keepalive(self) -> list[Block]:
        """Every event before the first keepalive, i.e. all the stream had to say now."""
        found = []
        for block in self.blocks():
            if block.comments == ["keepalive"]:
                return found
            found.append(block)
        raise AssertionError("the stream ended before going quiet")

    def close(self) -> None:
        self.response.close()


def _parse(raw: str) -> Block:
    block = Block()
    for line in raw.split("\n"):
        name, _, value = line.partition(":")
        if name == "":
            block.comments.append(value.strip())
        else:
            block.fields[name] = value.removeprefix(" ")
    return block


def open_stream(client, owner, query: str = "", **headers: str) -> SSE:
    response = client.get(
        f"/stream?home_id={owner.home_id}{query}",
        headers={**owner.headers, **headers},
        buffered=False,
    )
    sse = SSE(response)
    first = sse.next()
    assert first.fields == {"retry": "2000"}
    return sse


def publish_many(redis_client, home_id: int, n: int) -> list[str]:
    return [
        live.publish(redis_client, home_id, "alert", {"event_id": i, "title": f"Person {i}"})
        for i in range(n)
    ]


def test_an_entry_published_while_the_stream_is_open_arrives_live(client, owner, redis_client):
    publish_many(redis_client, owner.home_id, 2)  # before the client came: not replayed
    sse = open_stream(client, owner)
    ids: list[str] = []

    def later():
        time.sleep(0.3)  # the stream is blocked in XREAD by now
        ids.append(
            live.publish(redis_client, owner.home_id, "alert", {"event_id": 7, "title": "Person"})
        )

    worker = threading.Thread(target=later)
    worker.start()
    started = time.monotonic()
    block = sse.next_event()
    worker.join()
    assert block.event == "alert" and block.id == ids[0]
    assert block.data == {"event_id": 7, "title": "Person"}
    assert time.monotonic() - started < 5
    sse.close()


def test_last_event_id_replays_exactly_the_missed_entries_in_order(client, owner, redis_client):
    ids = publish_many(redis_client, owner.home_id, 5)
    sse = open_stream(client, owner, **{"Last-Event-ID": ids[1]})
    replayed = sse.events_until_keepalive()
    assert [b.id for b in replayed] == ids[2:]
    assert [b.data["event_id"] for b in replayed] == [2, 3, 4]
    sse.close()


def test_the_query_parameter_resumes_too_and_the_header_wins(client, owner, redis_client):
    ids = publish_many(redis_client, owner.home_id, 4)
    by_query = open_stream(client, owner, f"&last_event_id={ids[2]}")
    assert [b.id for b in by_query.events_until_keepalive()] == ids[3:]
    by_query.close()
    both = open_stream(client, owner, f"&last_event_id={ids[2]}", **{"Last-Event-ID": ids[0]})
    assert [b.id for b in both.events_until_keepalive()] == ids[1:]
    both.close()


def test_an_id_trimmed_from_the_log_sends_a_gap_then_the_whole_log(client, owner, redis_client):
    ids = publish_many(redis_client, owner.home_id, 3)
    redis_client.xtrim(live.stream_key(owner.home_id), maxlen=1, approximate=False)
    sse = open_stream(client, owner, **{"Last-Event-ID": ids[0]})
    gap, *rest = sse.events_until_keepalive()
    assert gap.event == "gap" and gap.id is None  # no id: the client's Last-Event-ID stays
    assert gap.data == {"last_event_id": ids[0]}
    assert [b.id for b in rest] == ids[2:]
    sse.close()


def test_a_silent_stream_sends_keepalives(client, owner):
    sse = open_stream(client, owner)
    started = time.monotonic()
    assert sse.next().comments == ["keepalive"]
    assert sse.next().comments == ["keepalive"]
    assert time.monotonic() - started < 5
    sse.close()


def test_the_response_ends_after_its_maximum_lifetime(app, client, owner):
    app.config["STREAM_MAX_S"] = 0.5
    started = time.monotonic()
    sse = open_stream(client, owner)
    rest = list(sse.blocks())
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 5
    assert rest and all(b.comments == ["keepalive"] for b in rest)


def test_closing_the_response_closes_its_redis_connection(client, owner, redis_client):
    def streams() -> list[dict]:
        return [c for c in redis_client.client_list() if c["name"] == "vigil-stream"]

    sse = open_stream(client, owner)
    assert sse.next().comments == ["keepalive"]
    assert len(streams()) == 1
    sse.close()  # what the server does when the client went away
    wait_for(lambda: not streams(), timeout=5)


def test_another_users_home_is_not_found(client, ana, bob):
    response = client.get(f"/stream?home_id={ana.home_id}", headers=bob.headers)
    assert response.status_code == 404 and error_code(response) == "home_not_found"


def test_no_token_is_unauthorized(client, owner):
    response = client.get(f"/stream?home_id={owner.home_id}")
    assert response.status_code == 401 and error_code(response) == "token_missing"


def test_a_bad_last_event_id_or_query_is_refused(client, owner):
    url = f"/stream?home_id={owner.home_id}"
    for query, headers, code in [
        ("", {"Last-Event-ID": "garbage"}, "invalid_last_event_id"),
        ("", {"Last-Event-ID": "1-2-3"}, "invalid_last_event_id"),
        ("&last_event_id=99999999999999999999999-0", {}, "invalid_last_event_id"),
        ("&home=1", {}, "validation_failed"),
    ]:
        response = client.get(url + query, headers={**owner.headers, **headers})
        assert response.status_code == 422 and error_code(response) == code, query or headers


def test_a_missing_or_invalid_home_id_is_refused(client, owner):
    for query in ("", "?home_id=abc", "?home_id=0"):
        response = client.get(f"/stream{query}", headers=owner.headers)
        assert response.status_code == 422, query
        assert error_code(response) == "validation_failed"


def test_the_deep_worker_publishes_analysed_and_failed_events_to_the_stream(
    client, owner, redis_client, db, redis_url, database_url
):
    with db.connection() as conn:
        good, broken = (
            conn.execute(
                "INSERT INTO events (home_id, device_id, location, mode, motion_score, image)"
                " VALUES (%s, %s, 'front_door', 'security', 0.9, %s) RETURNING id",
                (owner.home_id, owner.device_id, image),
            ).fetchone()["id"]
            for image in (photo("person").read_bytes(), b"\xff\xd8not a jpeg")
        )
    sse = open_stream(client, owner)
    ctx = WorkerContext.from_environ(dict(worker_env(redis_url, database_url), VIGIL_DEVICE="cpu"))
    try:
        outcome = analyse_batch(ctx, [good, broken])
        assert (outcome.analysed, outcome.failed) == ([good], [broken])
    finally:
        ctx.pool.close()
    analysed, failed = sse.events_until_keepalive()
    assert analysed.event == "event.analyzed" and analysed.data["event_id"] == good
    assert {"person", "dog"} <= set(analysed.data["labels"])
    assert failed.event == "event.failed" and failed.data["event_id"] == broken
    assert isinstance(failed.data["error"], str) and failed.data["error"]
    sse.close()


def test_publish_trims_approximately_and_refuses_unknown_kinds(redis_client):
    ids = [live.publish(redis_client, 1, "summary", {"n": i}, maxlen=50) for i in range(400)]
    assert ids == sorted(ids, key=live.parse_id)
    length = redis_client.xlen(live.stream_key(1))
    assert 50 <= length < 400  # approximate: whole nodes go, never fewer than maxlen
    assert live.read(redis_client, 1, ids[-2], None, 10) == [(ids[-1], "summary", {"n": 399})]
    with pytest.raises(ValueError, match="unknown live kind"):
        live.publish(redis_client, 1, "event.analysed", {})


def test_publish_all_appends_to_each_homes_log_in_order_or_writes_nothing(redis_client):
    ids = live.publish_all(
        redis_client,
        [(1, "event.analyzed", {"n": 1}), (2, "event.failed", {"n": 2}), (1, "alert", {"n": 3})],
    )
    assert [entry for entry in live.read(redis_client, 1, "0", None, 10)] == [
        (ids[0], "event.analyzed", {"n": 1}),
        (ids[2], "alert", {"n": 3}),
    ]
    assert live.read(redis_client, 2, "0", None, 10) == [(ids[1], "event.failed", {"n": 2})]
    with pytest.raises(ValueError):
        live.publish_all(redis_client, [(3, "alert", {}), (3, "no.such.kind", {})])
    assert not redis_client.exists(live.stream_key(3))


def test_resume_point_pins_new_only_and_reports_ids_the_log_cannot_continue(redis_client):
    assert live.resume_point(redis_client, 1, None) == (live.START, False)
    assert live.resume_point(redis_client, 1, "5-0") == (live.START, True)  # log lost
    ids = publish_many(redis_client, 1, 2)
    assert live.resume_point(redis_client, 1, None) == (ids[-1], False)
    assert live.resume_point(redis_client, 1, ids[0]) == (ids[0], False)
    assert live.resume_point(redis_client, 1, "0-0") == (live.START, False)
    assert live.resume_point(redis_client, 1, "1-0") == (live.START, True)  # trimmed away
    future = f"{live.parse_id(ids[-1])[0] + 10**6}-0"
    assert live.resume_point(redis_client, 1, future) == (live.START, True)
