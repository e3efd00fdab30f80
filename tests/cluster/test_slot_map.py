"""The cluster subscriber's pure parts: reading `CLUSTER SLOTS` and addressing nodes."""

from __future__ import annotations

import pytest
from redis.exceptions import RedisError

from gateway.cluster_subscriber import node_url, parse_slot_map


@pytest.mark.parametrize(
    ("seed", "address", "expected"),
    [
        ("redis://10.0.0.1:6379/0", ("10.0.0.2", 7000), "redis://10.0.0.2:7000/0"),
        (
            "rediss://user:p%40ss@seed.example:6380/0?ssl_cert_reqs=none",
            ("10.0.0.3", 6380),
            "rediss://user:p%40ss@10.0.0.3:6380/0?ssl_cert_reqs=none",
        ),
        ("redis://:secret@seed", ("::1", 7001), "redis://:secret@[::1]:7001"),
    ],
)
def test_node_url_keeps_scheme_credentials_and_options(
    seed: str, address: tuple[str, int], expected: str
) -> None:
    assert node_url(seed, address) == expected


def test_slot_map_names_each_slots_master() -> None:
    reply = [
        [0, 99, [b"10.0.0.1", 7000, b"id-a"], [b"10.0.0.9", 7009, b"id-r"]],
        [100, 16383, [b"", 7001, b"id-b"]],
    ]
    owners = parse_slot_map(reply, ("10.0.0.5", 7001))
    assert owners[0] == owners[99] == ("10.0.0.1", 7000)
    assert owners[100] == owners[16383] == ("10.0.0.5", 7001)  # "" is the node asked


def test_slot_map_leaves_uncovered_slots_without_master() -> None:
    owners = parse_slot_map([[5, 5, [b"h", 1, b"id"]]], ("h", 1))
    assert owners[5] == ("h", 1)
    assert owners[4] is None
    assert owners[6] is None


@pytest.mark.parametrize(
    "reply",
    [b"ERR", [[0]], [[0, 1, []]], [["x", 1, [b"h", 1]]], [[16000, 16384, [b"h", 1, b"id"]]]],
)
def test_malformed_slot_map_is_a_redis_error(reply: object) -> None:
    with pytest.raises(RedisError):
        parse_slot_map(reply, ("h", 1))
