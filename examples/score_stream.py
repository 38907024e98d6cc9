#!/usr/bin/env python3
"""Score a file of users over one ScoreStream from Python (grpcio), as a batch job would.

    pip install grpcio grpcio-tools
    python3 examples/score_stream.py --users users.csv --scenario cash_loan --out scores.csv

`users.csv` has a header and the columns `user_id,consent_token`: a batch job holds each user's
consent, as the platform's authorisation page issued it. Against `sesame serve` in demo mode,
make one with the demo partner's tokens:

    echo user_id,consent_token > users.csv
    for u in U0004ecbcf3e8 U000a1b75181b; do
      echo "$u,$(target/release/sesame consent issue --user $u --partner demo --scenario cash_loan)"
    done >> users.csv

Answers come back in request order, one per user: a score, or the error of that user alone
(the stream goes on). The client sends ahead of the answers and gRPC's flow control keeps it
from running away; the server scores up to `limits.stream_concurrency` users of the stream at
once. The output CSV has `request_id,user_id,score,band,pd,decision,error_code,error`.
Key: --key, or $SESAME_API_KEY, or the demo key (demo mode only).
"""
import argparse
import csv
import os
import sys

import grpc

from score import load_stubs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addr", default="127.0.0.1:50051")
    ap.add_argument("--key", default=os.environ.get("SESAME_API_KEY", "sesame-demo-key"))
    ap.add_argument("--users", required=True, help="CSV with user_id,consent_token")
    ap.add_argument("--scenario", default="cash_loan")
    ap.add_argument("--out", default="-", help="output CSV (default: standard output)")
    args = ap.parse_args()

    pb, rpc = load_stubs()
    with open(args.users, newline="") as f:
        users = [(row["user_id"], row["consent_token"]) for row in csv.DictReader(f)]

    def requests():
        for i, (user, token) in enumerate(users):
            yield pb.ScoreRequest(
                request_id=f"row-{i}",
                user_id=user,
                scenario=args.scenario,
                consent_token=token,
            )

    out = sys.stdout if args.out == "-" else open(args.out, "w", newline="")
    writer = csv.writer(out)
    writer.writerow(["request_id", "user_id", "score", "band", "pd", "decision",
                     "error_code", "error"])
    auth = [("authorization", f"Bearer {args.key}")]
    answered = failed = 0
    with grpc.insecure_channel(args.addr) as channel:
        stream = rpc.CreditScoringStub(channel).ScoreStream(requests(), metadata=auth)
        try:
            # One answer per request, in request order.
            for (user, _), item in zip(users, stream):
                if item.WhichOneof("item") == "response":
                    r = item.response
                    writer.writerow([r.request_id, user, r.score, pb.Band.Name(r.band),
                                     f"{r.probability_of_default:.6f}",
                                     pb.Decision.Name(r.decision), "", ""])
                    answered += 1
                else:
                    e = item.error
                    writer.writerow([e.request_id, user, "", "", "", "",
                                     code_name(e.code), e.message])
                    failed += 1
        except grpc.RpcError as e:
            # The whole stream refused: UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE...
            sys.exit(f"{e.code().name}: {e.details()}")
    if out is not sys.stdout:
        out.close()
    print(f"{answered} scored, {failed} refused, of {len(users)}", file=sys.stderr)


def code_name(number):
    """INVALID_ARGUMENT for 3: the name of a numeric gRPC status code."""
    return next((c.name for c in grpc.StatusCode if c.value[0] == number), str(number))


if __name__ == "__main__":
    main()
