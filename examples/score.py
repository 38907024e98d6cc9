#!/usr/bin/env python3
"""Score a user with Sesame over gRPC from Python (grpcio).

    pip install grpcio grpcio-tools
    python3 examples/score.py --user U0004ecbcf3e8 --scenario cash_loan

The stubs are generated from proto/sesame/v1/sesame.proto at start (into a temporary directory),
so the .proto file is the only thing a partner needs from us.
Key: --key, or $SESAME_API_KEY, or the demo key (demo mode only).
"""
import argparse
import importlib
import os
import pathlib
import subprocess
import sys
import tempfile
import uuid

import grpc
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"


def load_stubs():
    out = tempfile.mkdtemp(prefix="sesame-stubs-")
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    rc = protoc.main([
        "protoc", f"-I{PROTO_DIR}", f"-I{include}",
        f"--python_out={out}", f"--grpc_python_out={out}",
        str(PROTO_DIR / "sesame/v1/sesame.proto"),
    ])
    if rc != 0:
        sys.exit(f"protoc failed ({rc})")
    sys.path.insert(0, out)
    return (importlib.import_module("sesame.v1.sesame_pb2"),
            importlib.import_module("sesame.v1.sesame_pb2_grpc"))


def demo_consent(user, scenario):
    """A consent token for the demo partner, as the platform's authorisation page would issue."""
    out = subprocess.run(
        ["cargo", "run", "-q", "--release", "--", "consent", "issue",
         "--user", user, "--partner", "demo", "--scenario", scenario, "--ttl", "15m"],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addr", default="127.0.0.1:50051")
    ap.add_argument("--key", default=os.environ.get("SESAME_API_KEY", "sesame-demo-key"))
    ap.add_argument("--user", required=True)
    ap.add_argument("--scenario", default="cash_loan")
    ap.add_argument("--timeout", type=float, default=5.0, help="deadline, seconds")
    ap.add_argument(
        "--consent",
        default=os.environ.get("SESAME_CONSENT_TOKEN"),
        help="the user's consent token (default: `sesame consent issue` for --user/--scenario, "
        "which a demo-mode server accepts)",
    )
    args = ap.parse_args()

    pb, rpc = load_stubs()
    auth = [("authorization", f"Bearer {args.key}")]
    with grpc.insecure_channel(args.addr) as channel:
        client = rpc.CreditScoringStub(channel)
        req = pb.ScoreRequest(
            request_id=str(uuid.uuid4()),
            user_id=args.user,
            scenario=args.scenario,
            consent_token=args.consent or demo_consent(args.user, args.scenario),
        )
        try:
            resp = client.Score(req, metadata=auth, timeout=args.timeout)
        except grpc.RpcError as e:
            # e.code(): INVALID_ARGUMENT (message starts with the field), NOT_FOUND, UNAVAILABLE...
            sys.exit(f"{e.code().name}: {e.details()}")
        print(f"request {resp.request_id}")
        print(f"score {resp.score} ({pb.Band.Name(resp.band)}), PD {resp.probability_of_default:.4f}")
        print(f"decision {pb.Decision.Name(resp.decision)} {dict(resp.params)}")
        for d in resp.dimension_scores:
            print(f"  {pb.Dimension.Name(d.dimension):<24} {d.score}")
        for r in resp.reasons[:4]:
            print(f"  reason {r.code}: {r.text} (value {r.value}, -{r.points_lost:.1f} pts)")
        for h in resp.rule_hits:
            print(f"  rule {h.rule_id} [{h.policy}] -> {pb.Decision.Name(h.outcome)}: {h.reason}")
        print(f"model {resp.model_version}, features as of {resp.features_as_of}")


if __name__ == "__main__":
    main()
