"""Shared helpers for the stock-grpcio interop programs.

The generated stubs live under packages named ``grpc.testing``,
``grpc.health.v1`` and ``grpc.gcp`` (the upstream proto packages), which
collide with grpcio's own ``grpc`` package. We therefore append the
generated ``grpc`` directory to ``grpc.__path__`` so that the generated
modules import as sub-packages of grpcio's ``grpc``.
"""

import os
import sys

import grpc

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))


def _gen_dir():
    explicit = os.environ.get("INTEROP_PY_GEN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(_ROOT, "target"))
    return os.path.join(target, "interop-py")


GEN_DIR = _gen_dir()
if not os.path.isdir(os.path.join(GEN_DIR, "grpc")):
    sys.exit(f"generated stubs missing in {GEN_DIR}: run interop/python/setup_venv.sh")
sys.path.insert(0, GEN_DIR)
grpc.__path__.append(os.path.join(GEN_DIR, "grpc"))

from grpc.gcp import altscontext_pb2  # noqa: E402
from grpc.health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc  # noqa: E402

__all__ = [
    "altscontext_pb2",
    "health_pb2",
    "health_pb2_grpc",
    "empty_pb2",
    "messages_pb2",
    "test_pb2_grpc",
    "alts_context",
]


def alts_context(context):
    """Returns (AltsContext or None, dict of other auth properties) of a server call."""
    auth = context.auth_context() or {}
    parsed = None
    other = {}
    for key, values in auth.items():
        if key == "alts_context" and values:
            parsed = altscontext_pb2.AltsContext()
            parsed.ParseFromString(values[0])
        else:
            other[key] = [v.decode("utf-8", "replace") for v in values]
    return parsed, other


def describe_alts_context(ctx):
    if ctx is None:
        return "alts_context=<none>"
    attrs = ",".join(f"{k}={v}" for k, v in sorted(ctx.peer_attributes.items()))
    v = ctx.peer_rpc_versions
    return (
        f"peer={ctx.peer_service_account!r} local={ctx.local_service_account!r} "
        f"record_protocol={ctx.record_protocol} app_protocol={ctx.application_protocol} "
        f"security_level={ctx.security_level} "
        f"peer_rpc_versions={v.min_rpc_version.major}.{v.min_rpc_version.minor}.."
        f"{v.max_rpc_version.major}.{v.max_rpc_version.minor} attrs=[{attrs}]"
    )
