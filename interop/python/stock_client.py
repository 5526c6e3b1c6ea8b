#!/usr/bin/env python3
"""Stock grpcio client with ALTS credentials.

Calls grpc.health.v1.Health/Check and grpc.testing.TestService/{EmptyCall,
UnaryCall} on --server over grpc.alts_channel_credentials(service_accounts=
--target-service-account...). Prints one line per call (with the identity
the server reports in `x-alts-server-identity`, if any). Exit status 0 only
if every call succeeded; with --expect-failure, 0 only if every call failed.
"""

import argparse
import sys

import grpc

from _stubs import empty_pb2, health_pb2, health_pb2_grpc, messages_pb2, test_pb2_grpc

METHODS = ("health", "empty", "unary")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="127.0.0.1:50061")
    ap.add_argument(
        "--target-service-account",
        action="append",
        default=[],
        help="accepted server identity (repeatable); none = accept any",
    )
    ap.add_argument("--method", choices=METHODS + ("all",), default="all")
    ap.add_argument("--rpcs", type=int, default=1, help="calls per method")
    ap.add_argument("--response-size", type=int, default=1024)
    ap.add_argument("--timeout", type=float, default=10.0, help="per-call deadline (s)")
    ap.add_argument("--expect-failure", action="store_true", help="succeed only if all calls fail")
    args = ap.parse_args()

    creds = grpc.alts_channel_credentials(service_accounts=args.target_service_account)
    channel = grpc.secure_channel(args.server, creds)
    health = health_pb2_grpc.HealthStub(channel)
    test = test_pb2_grpc.TestServiceStub(channel)

    def call(method):
        if method == "health":
            resp, c = health.Check.with_call(health_pb2.HealthCheckRequest(), timeout=args.timeout)
            ok = resp.status == health_pb2.HealthCheckResponse.SERVING
            detail = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        elif method == "empty":
            _, c = test.EmptyCall.with_call(empty_pb2.Empty(), timeout=args.timeout)
            ok, detail = True, "empty"
        else:
            req = messages_pb2.SimpleRequest(
                response_size=args.response_size,
                payload=messages_pb2.Payload(body=b"\1" * 64),
            )
            resp, c = test.UnaryCall.with_call(req, timeout=args.timeout)
            got = len(resp.payload.body)
            ok = got == args.response_size
            detail = f"payload={got}B"
        ident = dict(c.initial_metadata() or ()).get("x-alts-server-identity", "<not reported>")
        return ok, f"{detail} server_identity={ident!r}"

    methods = METHODS if args.method == "all" else (args.method,)
    succeeded = failed = 0
    for method in methods:
        for i in range(args.rpcs):
            try:
                ok, detail = call(method)
            except grpc.RpcError as e:
                ok, detail = False, f"{e.code().name}: {e.details()}"
            if ok:
                succeeded += 1
            else:
                failed += 1
            print(f"stock_client: {method}#{i} {'OK' if ok else 'FAIL'} {detail}", flush=True)
    channel.close()

    print(f"stock_client: {succeeded} succeeded, {failed} failed", flush=True)
    if args.expect_failure:
        return 0 if succeeded == 0 else 1
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
