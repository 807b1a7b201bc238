"""The wire contract, checked by a client generated from proto/eventstore.proto
by grpcio-tools (independently of the server's own code generation).

Starts the server binary on free ports with a temporary data directory and
checks the gRPC paths, the scope enum numbering (the zero value included),
and the status code and a stable part of the message of every outcome:
each validation rule, each size limit at the limit and one byte over it,
the transport's message-size limit (OUT_OF_RANGE), TTL bounds and expiry.
Prints 'N passed, N failed' and exits non-zero on any failure.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import grpc

import eventstore_pb2 as pb
import eventstore_pb2_grpc as rpc

# The server's defaults (README, Limits).
MAX_KEY = 1024
MAX_NAME = 256
MAX_VALUE = 1 << 20
# Requests larger than the value limit plus 4 MiB are refused by the
# transport before they are read (src/server/mod.rs).
MAX_MESSAGE = MAX_VALUE + (4 << 20)
REQUEST_ID = "eventstore-request-id"
MAX_REQUEST_ID = 128

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
TOO_LARGE = grpc.StatusCode.RESOURCE_EXHAUSTED
OUT_OF_RANGE = grpc.StatusCode.OUT_OF_RANGE

results = {"passed": 0, "failed": 0}


def check(name, cond, detail=""):
    if cond:
        results["passed"] += 1
    else:
        results["failed"] += 1
        print(f"FAIL {name} {detail}", file=sys.stderr)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def call(fn, req, metadata=None):
    """(status code, message, response or None) of one call."""
    try:
        return OK, "", fn(req, timeout=10, metadata=metadata)
    except grpc.RpcError as e:
        return e.code(), e.details() or "", None


def code_of(fn, req):
    return call(fn, req)[0]


def expect(name, fn, req, code, fragment="", metadata=None):
    """Checks that the call answers `code` with `fragment` in its message."""
    got, message, _ = call(fn, req, metadata)
    check(f"{name}: code", got == code, f"expected {code}, got {got} {message!r}")
    if fragment:
        check(f"{name}: message", fragment in message,
              f"message {message!r} lacks {fragment!r}")


def loc(scope, key, bridge="", instance=""):
    return pb.LocationType(scope=pb.ScopeType(type=scope, bridge=bridge, instance=instance), key=key)


def round_trip(stub, name, l, value=b"v"):
    """Save, Load, Delete and Load again at `l`, all answering as they should."""
    expect(f"{name} save", stub.Save, pb.SaveRequest(location=l, ttl=60, value=value), OK)
    code, message, r = call(stub.Load, pb.LoadRequest(location=l))
    check(f"{name} load", code == OK and r.value == value,
          f"{code} {message!r} {None if r is None else len(r.value)} bytes")
    expect(f"{name} delete", stub.Delete, pb.DeleteRequest(location=l), OK)
    expect(f"{name} load deleted", stub.Load, pb.LoadRequest(location=l), NOT_FOUND, "no value at")


def all_ops(stub, name, l, code, fragment):
    """Save, Load and Delete at `l` all answer `code` with `fragment`."""
    kw = {} if l is None else {"location": l}
    expect(f"save {name}", stub.Save, pb.SaveRequest(ttl=5, value=b"v", **kw), code, fragment)
    expect(f"load {name}", stub.Load, pb.LoadRequest(**kw), code, fragment)
    expect(f"delete {name}", stub.Delete, pb.DeleteRequest(**kw), code, fragment)


def check_paths(channel):
    """The methods are served at their contract paths, whatever the stub says."""
    service = pb.DESCRIPTOR.services_by_name["EventStore"]
    check("service name", service.full_name == "protob.EventStore", service.full_name)
    check("method names", [m.name for m in service.methods] == ["Save", "Load", "Delete"],
          [m.name for m in service.methods])
    l = loc(pb.Global, "path-check")
    raw = {
        "Save": (pb.SaveRequest(location=l, ttl=60, value=b"p"), pb.SaveResponse),
        "Load": (pb.LoadRequest(location=l), pb.LoadResponse),
        "Delete": (pb.DeleteRequest(location=l), pb.DeleteResponse),
    }
    for method, (req, resp) in raw.items():
        fn = channel.unary_unary(f"/protob.EventStore/{method}",
                                 request_serializer=req.__class__.SerializeToString,
                                 response_deserializer=resp.FromString)
        code, message, r = call(fn, req)
        check(f"path /protob.EventStore/{method}", code == OK, f"{code} {message!r}")
        if method == "Load":
            check("load through the raw path", r is not None and r.value == b"p", repr(r))
    wrong = channel.unary_unary("/eventstore.EventStore/Load",
                                request_serializer=pb.LoadRequest.SerializeToString,
                                response_deserializer=pb.LoadResponse.FromString)
    check("an unknown path is UNIMPLEMENTED",
          code_of(wrong, pb.LoadRequest(location=l)) == grpc.StatusCode.UNIMPLEMENTED)


def check_zero_value_scope(stub):
    """ScopeChoice's zero value is Instance: an unset type means Instance."""
    check("enum numbering", (pb.Instance, pb.Bridge, pb.Global) == (0, 1, 2))
    check("the zero value is Instance", pb.ScopeType().type == pb.Instance)
    unset = pb.LocationType(scope=pb.ScopeType(bridge="zb", instance="zi"), key="zk")
    check("an unset type and Instance are the same bytes on the wire",
          unset.SerializeToString() == loc(pb.Instance, "zk", "zb", "zi").SerializeToString())
    expect("save with the type unset", stub.Save, pb.SaveRequest(location=unset, ttl=60, value=b"z"), OK)
    code, message, r = call(stub.Load, pb.LoadRequest(location=loc(pb.Instance, "zk", "zb", "zi")))
    check("an unset type saves at Instance", code == OK and r.value == b"z", f"{code} {message!r}")
    expect("delete with the type unset", stub.Delete, pb.DeleteRequest(location=unset), OK)
    expect("deleted with the type unset", stub.Load,
           pb.LoadRequest(location=loc(pb.Instance, "zk", "zb", "zi")), NOT_FOUND, "no value at")
    # An empty scope message is present, and is an Instance scope without names.
    all_ops(stub, "empty scope message", pb.LocationType(scope=pb.ScopeType(), key="k"),
            INVALID, "Instance scope requires a bridge name")
    # A bridge name alone with the type unset is an Instance without an id, not a Bridge.
    all_ops(stub, "bridge name with the type unset",
            pb.LocationType(scope=pb.ScopeType(bridge="b"), key="k"),
            INVALID, "Instance scope requires an instance id")


def check_validation(stub):
    bad_locations = [
        ("no location", None, "location is required"),
        ("no scope", pb.LocationType(key="k"), "location.scope is required"),
        ("empty key", loc(pb.Global, ""), "key must not be empty"),
        ("empty key in Bridge", loc(pb.Bridge, "", bridge="b"), "key must not be empty"),
        ("empty key in Instance", loc(pb.Instance, "", "b", "i"), "key must not be empty"),
        ("global with bridge", loc(pb.Global, "k", bridge="b"),
         "Global scope must not have a bridge or an instance"),
        ("global with instance", loc(pb.Global, "k", instance="i"),
         "Global scope must not have a bridge or an instance"),
        ("bridge without bridge", loc(pb.Bridge, "k"), "Bridge scope requires a bridge name"),
        ("bridge with instance", loc(pb.Bridge, "k", bridge="b", instance="i"),
         "Bridge scope must not have an instance"),
        ("instance without instance", loc(pb.Instance, "k", bridge="b"),
         "Instance scope requires an instance id"),
        ("instance without bridge", loc(pb.Instance, "k", instance="i"),
         "Instance scope requires a bridge name"),
        ("unknown scope", loc(9, "k"), "unknown scope type 9"),
        ("negative scope", loc(-1, "k"), "unknown scope type -1"),
    ]
    for name, l, fragment in bad_locations:
        all_ops(stub, name, l, INVALID, fragment)
    expect("nothing invalid was stored", stub.Load, pb.LoadRequest(location=loc(pb.Global, "k")),
           NOT_FOUND, "no value at")


def check_size_limits(stub):
    # Key: bytes, not characters.
    round_trip(stub, "key at the limit", loc(pb.Global, "k" * MAX_KEY))
    round_trip(stub, "multibyte key at the limit", loc(pb.Global, "\u00e9" * (MAX_KEY // 2)))
    all_ops(stub, "key over the limit", loc(pb.Global, "k" * (MAX_KEY + 1)), INVALID,
            f"key is {MAX_KEY + 1} bytes, over the limit of {MAX_KEY} bytes")
    all_ops(stub, "multibyte key over the limit", loc(pb.Global, "\u00e9" * (MAX_KEY // 2) + "k"),
            INVALID, f"key is {MAX_KEY + 1} bytes, over the limit of {MAX_KEY} bytes")
    # Bridge name, in the Bridge and Instance scopes.
    round_trip(stub, "bridge at the limit", loc(pb.Bridge, "k", bridge="b" * MAX_NAME))
    round_trip(stub, "instance's bridge at the limit",
               loc(pb.Instance, "k", bridge="b" * MAX_NAME, instance="i"))
    for name, l in [("bridge", loc(pb.Bridge, "k", bridge="b" * (MAX_NAME + 1))),
                    ("instance's bridge", loc(pb.Instance, "k", bridge="b" * (MAX_NAME + 1), instance="i"))]:
        all_ops(stub, f"{name} over the limit", l, INVALID,
                f"bridge is {MAX_NAME + 1} bytes, over the limit of {MAX_NAME} bytes")
    # Instance id.
    round_trip(stub, "instance at the limit", loc(pb.Instance, "k", bridge="b", instance="i" * MAX_NAME))
    all_ops(stub, "instance over the limit", loc(pb.Instance, "k", bridge="b", instance="i" * (MAX_NAME + 1)),
            INVALID, f"instance is {MAX_NAME + 1} bytes, over the limit of {MAX_NAME} bytes")
    # Value.
    round_trip(stub, "value at the limit", loc(pb.Global, "big"), value=b"\x07" * MAX_VALUE)
    expect("value over the limit", stub.Save,
           pb.SaveRequest(location=loc(pb.Global, "big"), ttl=5, value=b"x" * (MAX_VALUE + 1)),
           TOO_LARGE, f"value is {MAX_VALUE + 1} bytes, over the limit of {MAX_VALUE} bytes")
    expect("a value over the limit is not stored", stub.Load,
           pb.LoadRequest(location=loc(pb.Global, "big")), NOT_FOUND, "no value at")
    # Request id.
    save = pb.SaveRequest(location=loc(pb.Global, "rid"), ttl=60, value=b"r")
    expect("request id at the limit", stub.Save, save, OK,
           metadata=((REQUEST_ID, "r" * MAX_REQUEST_ID),))
    expect("request id over the limit", stub.Save, save, INVALID,
           f"{REQUEST_ID} must be 1 to {MAX_REQUEST_ID} bytes, got {MAX_REQUEST_ID + 1}",
           metadata=((REQUEST_ID, "r" * (MAX_REQUEST_ID + 1)),))
    expect("request id over the limit on Delete", stub.Delete,
           pb.DeleteRequest(location=loc(pb.Global, "rid")), INVALID,
           f"{REQUEST_ID} must be 1 to {MAX_REQUEST_ID} bytes",
           metadata=((REQUEST_ID, "r" * (MAX_REQUEST_ID + 1)),))


def save_of_size(size):
    """A Save whose encoded message is exactly `size` bytes."""
    n = size - 32
    while True:
        req = pb.SaveRequest(location=loc(pb.Global, "huge"), ttl=5, value=b"h" * n)
        if req.ByteSize() == size:
            return req
        n += size - req.ByteSize()


def check_out_of_range(stub):
    """OUT_OF_RANGE comes from the transport only: a message over the value
    limit plus 4 MiB. Nothing in validation answers it; TTL bounds are
    INVALID_ARGUMENT (negative) or accepted (int32's maximum)."""
    at = save_of_size(MAX_MESSAGE)
    expect("a message at the transport limit reaches validation", stub.Save, at, TOO_LARGE,
           f"value is {len(at.value)} bytes, over the limit of {MAX_VALUE} bytes")
    over = save_of_size(MAX_MESSAGE + 1)
    expect("a message one byte over the transport limit", stub.Save, over, OUT_OF_RANGE,
           f"decoded message length too large: found {MAX_MESSAGE + 1} bytes, "
           f"the limit is: {MAX_MESSAGE} bytes")
    expect("a huge Load", stub.Load, pb.LoadRequest(location=loc(pb.Global, "k" * (MAX_MESSAGE + 1))),
           OUT_OF_RANGE, "decoded message length too large")
    expect("nothing huge was stored", stub.Load, pb.LoadRequest(location=loc(pb.Global, "huge")),
           NOT_FOUND, "no value at")

    expect("negative ttl", stub.Save, pb.SaveRequest(location=loc(pb.Global, "k"), ttl=-1, value=b"v"),
           INVALID, "ttl must be 0 (the scope's default) or a positive number of seconds, got -1")
    expect("most negative ttl", stub.Save,
           pb.SaveRequest(location=loc(pb.Global, "k"), ttl=-(2 ** 31), value=b"v"),
           INVALID, f"got {-(2 ** 31)}")
    l = loc(pb.Global, "forever")
    expect("largest ttl", stub.Save, pb.SaveRequest(location=l, ttl=2 ** 31 - 1, value=b"f"), OK)
    code, message, r = call(stub.Load, pb.LoadRequest(location=l))
    check("a value with the largest ttl loads", code == OK and r.value == b"f", f"{code} {message!r}")


def check_values_and_expiry(stub):
    for scope, args in [(pb.Global, {}), (pb.Bridge, {"bridge": "b"}),
                        (pb.Instance, {"bridge": "b", "instance": "i"})]:
        name = pb.ScopeChoice.Name(scope)
        l = loc(scope, "k", **args)
        round_trip(stub, name, l, value=b"\x00\x01v")
        expect(f"delete missing {name}", stub.Delete, pb.DeleteRequest(location=l), OK)
    expect("empty value", stub.Save, pb.SaveRequest(location=loc(pb.Global, "e"), ttl=5), OK)
    code, message, r = call(stub.Load, pb.LoadRequest(location=loc(pb.Global, "e")))
    check("empty value loads", code == OK and r.value == b"", f"{code} {message!r}")

    # A 1 s TTL: found before its deadline, NOT_FOUND from the deadline on.
    # The server runs without its purger, so only the Load's own deadline
    # check can hide the value.
    l = loc(pb.Global, "t")
    sent = time.monotonic()
    expect("ttl expiry", stub.Save, pb.SaveRequest(location=l, ttl=1, value=b"v"), OK)
    acked = time.monotonic()
    while True:
        code, message, _ = call(stub.Load, pb.LoadRequest(location=l))
        now = time.monotonic()
        if code != OK:
            break
        if now > acked + 1.5:
            break
        time.sleep(0.02)
    check("expired is NOT_FOUND", code == NOT_FOUND and "no value at" in message, f"{code} {message!r}")
    check("expired no later than its deadline", now <= acked + 1.5,
          f"still found {now - acked:.2f} s after the save was acknowledged")
    check("found until its deadline", now >= sent + 0.95,
          f"gone {now - sent:.2f} s after the save was sent")


def main():
    binary = sys.argv[1]
    data = tempfile.mkdtemp()
    port, peer = free_port(), free_port()
    proc = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--peer-listen", f"127.0.0.1:{peer}",
         "--data-dir", os.path.join(data, "d"), "--metrics-listen", f"127.0.0.1:{free_port()}",
         # Purging every 10 minutes: effectively never, in this run.
         "--purge-interval-ms", "600000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", 64 << 20),
        ])
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = rpc.EventStoreStub(channel)
        # Wait for the node to elect itself.
        deadline = time.time() + 30
        while code_of(stub.Delete, pb.DeleteRequest(location=loc(pb.Global, "warmup"))) != OK:
            if time.time() > deadline:
                raise SystemExit("server never became ready")
            time.sleep(0.1)

        check_paths(channel)
        check_zero_value_scope(stub)
        check_values_and_expiry(stub)
        check_validation(stub)
        check_size_limits(stub)
        check_out_of_range(stub)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(data, ignore_errors=True)

    print(f"contract: {results['passed']} passed, {results['failed']} failed")
    sys.exit(1 if results["failed"] else 0)


if __name__ == "__main__":
    main()
