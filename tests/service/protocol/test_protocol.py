from __future__ import annotations

import json

import numpy as np
import pytest
import zmq

from service import protocol


def test_round_trip_with_image(rng):
    img = rng.integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    fields, payload = protocol.encode_image(img)
    frames = protocol.encode("frame", {"run_id": "r1", "seq": 0, "volume": 3, **fields}, payload)
    msg = protocol.decode(frames, protocol.SERVICE_TOPICS)
    assert msg.topic == "frame" and msg.header["schema"] == protocol.SCHEMA and msg.header["volume"] == 3
    np.testing.assert_array_equal(msg.image(), img)


def test_float_image_is_quantised():
    fields, payload = protocol.encode_image(np.full((2, 2, 3), 0.5, np.float32))
    assert protocol.decode_image(fields, payload).max() == 128


@pytest.mark.parametrize(
    "frames, reason",
    [
        ([b"frame"], "3 message parts"),
        ([b"frame", b"{not json", b""], "not UTF-8 JSON"),
        ([b"frame", b"[1, 2]", b""], "JSON object"),
        ([b"frame", json.dumps({"schema": 99}).encode(), b""], "schema 99"),
        ([b"bogus", json.dumps({"schema": 1}).encode(), b""], "unknown topic"),
        ([b"frame", json.dumps({"schema": 1, "shape": [2, 2, 3], "dtype": "uint8"}).encode(), b"abc"], "needs 12"),
        ([b"\xff", b"{}", b""], "not ASCII"),
    ],
)
def test_malformed_messages_are_named_errors(frames, reason):
    with pytest.raises(protocol.ProtocolError, match=reason):
        protocol.decode(frames, protocol.SERVICE_TOPICS)


def test_unknown_header_fields_are_tolerated():
    msg = protocol.decode(protocol.encode("status", {"seq": 0, "future_field": {"x": 1}}), protocol.SERVICE_TOPICS)
    assert msg.header["future_field"] == {"x": 1}


def test_seq_counter_per_topic_and_resume():
    c = protocol.SeqCounter({"frame": 5})
    assert [c.next("frame"), c.next("frame"), c.next("trial")] == [5, 6, 0]
    assert c.state() == {"frame": 7, "trial": 1}


def test_event_and_flip_headers():
    with pytest.raises(protocol.ProtocolError):
        protocol.event_header("nonsense", 0)
    h = protocol.event_header("onset", 2, onset=3.0, trial_type="test_face", stim_id="a.png")
    assert h["kind"] == "onset" and h["seq"] == 2
    f = protocol.flip_header(0, "frame", 12, 100.5)
    assert f["shown_seq"] == 12


def test_pub_sub_push_pull_over_loopback(tcp_address):
    ctx = zmq.Context()
    try:
        pub = protocol.publisher(ctx, tcp_address)
        sub = protocol.subscriber(ctx, tcp_address, ("frame",))
        got = None
        for i in range(200):  # slow joiner: publish until the subscription is in place
            protocol.send(pub, "frame", {"seq": i})
            got = protocol.recv(sub, 10, protocol.SERVICE_TOPICS)
            if got:
                break
        assert got is not None and got.topic == "frame"
        addr2 = tcp_address.rsplit(":", 1)[0] + ":0"
        pull = protocol.puller(ctx, addr2)
        push = protocol.pusher(ctx, pull.getsockopt(zmq.LAST_ENDPOINT).decode())
        assert protocol.send(push, "event", protocol.event_header("trigger", 0, trigger_time=1.0))
        msg = protocol.recv(pull, 2000, protocol.INBOUND_TOPICS)
        assert msg is not None and msg.header["kind"] == "trigger"
    finally:
        ctx.destroy(linger=0)


def test_send_never_blocks_without_subscribers(tcp_address):
    ctx = zmq.Context()
    try:
        pub = protocol.publisher(ctx, tcp_address, hwm=2)
        for i in range(1000):
            protocol.send(pub, "frame", {"seq": i}, b"x" * 1000)
    finally:
        ctx.destroy(linger=0)


def test_puller_drops_an_oversized_frame_and_keeps_serving(tcp_address):
    ctx = zmq.Context()
    try:
        pull = protocol.puller(ctx, tcp_address)
        endpoint = pull.getsockopt(zmq.LAST_ENDPOINT).decode()
        rogue = ctx.socket(zmq.PUSH)
        rogue.setsockopt(zmq.LINGER, 0)
        rogue.connect(endpoint)
        rogue.send_multipart([b"event", b"{}", b"\0" * (protocol.MAX_PAYLOAD_BYTES + 4096)])
        assert pull.poll(500) == 0  # the frame never reaches the service: ZeroMQ dropped that connection
        push = protocol.pusher(ctx, endpoint)
        assert protocol.send(push, "event", protocol.event_header("trigger", 0, trigger_time=1.0))
        msg = protocol.recv(pull, 2000, protocol.INBOUND_TOPICS)
        assert msg is not None and msg.header["kind"] == "trigger"
    finally:
        ctx.destroy(linger=0)
