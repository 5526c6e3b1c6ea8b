#!/usr/bin/env python3
"""Stock grpcio server with ALTS credentials (grpc.alts_server_credentials()).

Serves grpc.health.v1.Health/Check and grpc.testing.TestService/{EmptyCall,
UnaryCall}. For every call it prints the peer's ALTS context and sends its
own local service account back as initial metadata `x-alts-server-identity`
so a stock client can print it.

Like every stock gRPC stack, it needs a handshaker service reachable at
metadata.google.internal.:8080 and a machine that looks like a GCE VM
(see interop/scripts/netns-run.sh).
"""

import argparse
import signal
import sys
from concurrent import futures

import grpc

import _stubs
from _stubs import empty_pb2, health_pb2, health_pb2_grpc, messages_pb2, test_pb2_grpc

MAX_RESPONSE_SIZE = 4 * 1024 * 1024


def _log_peer(method, context):
    ctx, other = _stubs.alts_context(context)
    security = other.get("transport_security_type", ["?"])
    print(
        f"stock_server: {method} from {context.peer()} security={','.join(security)} "
        f"{_stubs.describe_alts_context(ctx)}",
        flush=True,
    )
    if ctx is not None and ctx.local_service_account:
        context.send_initial_metadata((("x-alts-server-identity", ctx.local_service_account),))


class Health(health_pb2_grpc.HealthServicer):
    def Check(self, request, context):
        _log_peer("Health/Check", context)
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


class TestService(test_pb2_grpc.TestServiceServicer):
    def EmptyCall(self, request, context):
        _log_peer("TestService/EmptyCall", context)
        return empty_pb2.Empty()

    def UnaryCall(self, request, context):
        _log_peer("TestService/UnaryCall", context)
        size = request.response_size
        if size < 0 or size > MAX_RESPONSE_SIZE:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"response_size {size} out of range")
        return messages_pb2.SimpleResponse(payload=messages_pb2.Payload(body=b"\0" * size))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=50061)
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    health_pb2_grpc.add_HealthServicer_to_server(Health(), server)
    test_pb2_grpc.add_TestServiceServicer_to_server(TestService(), server)
    addr = f"{args.host}:{args.port}"
    port = server.add_secure_port(addr, grpc.alts_server_credentials())
    if port == 0:
        print(f"stock_server: cannot bind {addr}", file=sys.stderr, flush=True)
        return 1
    server.start()
    print(f"stock_server: listening on {args.host}:{port} (ALTS)", flush=True)

    def stop(*_):
        server.stop(grace=0.5)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
