"""The wire contract, checked by a client generated from proto/eventstore.proto
by grpcio-tools (independently of the server's own code generation).

Starts the server binary on free ports with a temporary data directory and
checks the gRPC paths, the scope enum numbering and the status code of every
outcome. Prints 'N passed, N failed' and exits non-zero on any failure.
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


def code_of(fn, req):
    try:
        fn(req, timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def loc(scope, key, bridge="", instance=""):
    return pb.LocationType(scope=pb.ScopeType(type=scope, bridge=bridge, instance=instance), key=key)


def main():
    binary = sys.argv[1]
    data = tempfile.mkdtemp()
    port, peer = free_port(), free_port()
    proc = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--peer-listen", f"127.0.0.1:{peer}",
         "--data-dir", os.path.join(data, "d"), "--metrics-listen", f"127.0.0.1:{free_port()}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = rpc.EventStoreStub(channel)
        # Wait for the node to elect itself.
        deadline = time.time() + 30
        while code_of(stub.Delete, pb.DeleteRequest(location=loc(pb.Global, "warmup"))) != grpc.StatusCode.OK:
            if time.time() > deadline:
                raise SystemExit("server never became ready")
            time.sleep(0.1)

        check("enum numbering", (pb.Instance, pb.Bridge, pb.Global) == (0, 1, 2))
        check("paths", rpc.EventStoreStub.__init__ is not None and
              "/protob.EventStore/Save" in open(rpc.__file__).read())

        ok = grpc.StatusCode.OK
        for scope, args in [(pb.Global, {}), (pb.Bridge, {"bridge": "b"}),
                            (pb.Instance, {"bridge": "b", "instance": "i"})]:
            name = pb.ScopeChoice.Name(scope)
            l = loc(scope, "k", **args)
            check(f"save {name}", code_of(stub.Save, pb.SaveRequest(location=l, ttl=60, value=b"\x00\x01v")) == ok)
            r = stub.Load(pb.LoadRequest(location=l), timeout=10)
            check(f"load {name}", r.value == b"\x00\x01v", repr(r.value))
            check(f"delete {name}", code_of(stub.Delete, pb.DeleteRequest(location=l)) == ok)
            check(f"load deleted {name}",
                  code_of(stub.Load, pb.LoadRequest(location=l)) == grpc.StatusCode.NOT_FOUND)
            check(f"delete missing {name}", code_of(stub.Delete, pb.DeleteRequest(location=l)) == ok)

        invalid = grpc.StatusCode.INVALID_ARGUMENT
        bad_locations = {
            "no location": None,
            "no scope": pb.LocationType(key="k"),
            "empty key": loc(pb.Global, ""),
            "global with bridge": loc(pb.Global, "k", bridge="b"),
            "bridge without bridge": loc(pb.Bridge, "k"),
            "bridge with instance": loc(pb.Bridge, "k", bridge="b", instance="i"),
            "instance without instance": loc(pb.Instance, "k", bridge="b"),
            "instance without bridge": loc(pb.Instance, "k", instance="i"),
            "unknown scope": loc(9, "k"),
        }
        for name, l in bad_locations.items():
            kw = {} if l is None else {"location": l}
            check(f"save {name}", code_of(stub.Save, pb.SaveRequest(ttl=5, value=b"v", **kw)) == invalid)
            check(f"load {name}", code_of(stub.Load, pb.LoadRequest(**kw)) == invalid)
            check(f"delete {name}", code_of(stub.Delete, pb.DeleteRequest(**kw)) == invalid)
        check("negative ttl",
              code_of(stub.Save, pb.SaveRequest(location=loc(pb.Global, "k"), ttl=-1, value=b"v")) == invalid)
        check("oversized value",
              code_of(stub.Save, pb.SaveRequest(location=loc(pb.Global, "k"), ttl=5, value=b"x" * ((1 << 20) + 1)))
              == grpc.StatusCode.RESOURCE_EXHAUSTED)
        check("empty value", code_of(stub.Save, pb.SaveRequest(location=loc(pb.Global, "e"), ttl=5)) == ok)
        check("empty value loads", stub.Load(pb.LoadRequest(location=loc(pb.Global, "e")), timeout=10).value == b"")
        check("ttl expiry", code_of(stub.Save, pb.SaveRequest(location=loc(pb.Global, "t"), ttl=1, value=b"v")) == ok)
        time.sleep(1.3)
        check("expired is NOT_FOUND",
              code_of(stub.Load, pb.LoadRequest(location=loc(pb.Global, "t"))) == grpc.StatusCode.NOT_FOUND)
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
