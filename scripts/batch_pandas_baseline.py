#!/usr/bin/env python3
"""A pandas + optbinning script doing the job of `sesame batch` (raw tables in, a score per user
out) — the baseline the batch benchmark in docs/batch.md is compared with.

    pip install pandas pyarrow optbinning          # this script installs nothing itself
    python3 scripts/batch_pandas_baseline.py --data /tmp/g100k --out /tmp/pandas_scores.parquet

What it does, step by step (timed on stderr, summary line on stdout):

1. Read: every raw Parquet table `sesame datasets generate` writes (users, transactions,
   behaviors, relations, judgments, labels) fully into pandas, in one piece (no chunking).
2. Features: the definitions of the model's pipeline file (--model, default models/default),
   re-implemented in pandas as of 2025-12-31 with the semantics of src/features/pipeline.rs
   (rows strictly before as-of, windows in days back from as-of, filters, days past due, hour of
   day; a user with no rows gets missing, a user with rows but none matching gets 0 for counts
   and sums):
     - every `attribute` (days/months since for dates), every `aggregate` (count, sum, mean,
       max, min, std, n_unique, days_since_last/first; edge tables from both ends), every
       `ratio`, the one-hop `neighbors` features (share, mean, count; edge kinds) and `shared`
       (distinct other users sharing a device in the window);
     - NOT computed: `two_hop` (two_hop_judgments); it is left out of the scorecard.
   The values have not been checked value for value against `sesame features`: the same
   definitions, not a proven-identical implementation.
3. Scoring — NOT the same model as `sesame batch`: the script does not read the trained bins of
   scorecard.json. It fits its own optbinning Scorecard (BinningProcess with optimal binning per
   feature + scikit-learn LogisticRegression) on a sample of --train-sample labelled users
   (default 50,000; all of them when fewer), scaled with the model's points-at-odds/PDO/base
   score, then scores every user, rounds, clamps to 350..950 and bands with the model's bands.
   Its scores therefore differ from sesame's. It computes no dimension scores, no reason codes
   and no rule decisions (`--scenario`).
4. Write user_id, score, band, pd to a zstd Parquet file.

So it is a comparable workload, not a replica: the same inputs, (almost) the same feature work,
a simpler score. The fit is the one step `sesame batch` does not do (it loads a trained model),
so the summary gives the time with and without import + fit; the fair comparison is "without".
"""

import argparse
import json
import sys
import time
import tomllib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

AS_OF = "2025-12-31"
MS_PER_DAY = 86_400_000.0


def log(msg, t0):
    print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def age_days(s, as_of):
    """Days from a date/time column to as-of (positive = before as-of), as float."""
    if pd.api.types.is_datetime64_any_dtype(s):
        ms = s.astype("datetime64[ms]").astype("int64").where(s.notna())
        return (as_of.value // 1_000_000 - ms) / MS_PER_DAY
    raise TypeError(f"column {s.name} is {s.dtype}, not a date/time")


def read(path):
    """pandas' Parquet reader (pyarrow), dates as datetime64 rather than Python objects."""
    return pq.read_table(path).to_pandas(date_as_object=False)


def cond_mask(df, conds):
    m = np.ones(len(df), dtype=bool)
    for c in conds:
        x = df[c["column"]]
        op, v = c["op"], c.get("value")
        if op == "eq":
            cm = x == v
        elif op == "ne":
            cm = x != v
        elif op == "in":
            cm = x.isin(v)
        elif op == "not_in":
            cm = ~x.isin(v)
        elif op in ("gt", "ge", "lt", "le"):
            xf = pd.to_numeric(x, errors="coerce").astype("float64")
            cm = {"gt": xf > v, "ge": xf >= v, "lt": xf < v, "le": xf <= v}[op]
        elif op == "is_null":
            cm = x.isna()
        elif op == "not_null":
            cm = x.notna()
        else:
            raise ValueError(f"filter op {op}")
        m &= np.asarray(pd.Series(cm).fillna(False), dtype=bool)
    return m


def event_rows(df, table, as_of_ts, as_of_days):
    """Rows before as-of with the age column and the derived columns."""
    t = table.get("time")
    if t:
        df["days_before_as_of"] = age_days(df[t], as_of_ts)
        df = df[df["days_before_as_of"] > 0].reset_index(drop=True)
    else:
        df["days_before_as_of"] = 0.0
    for d in table.get("derive", []):
        if d["kind"] == "days_past_due":
            due = age_days(df[d["due"]], as_of_ts)  # as-of minus due, in days
            paid = age_days(df[d["paid"]], as_of_ts)
            paid_known = paid.notna() & (paid > 0)  # paid before as-of
            late_paid = (due - paid).clip(lower=0)  # paid - due
            dpd = np.where(paid_known, late_paid, np.where(due > 0, due, np.nan))
            df[d["name"]] = dpd
        elif d["kind"] == "hour_of_day":
            ms = df[d["column"]].astype("datetime64[ms]").astype("int64")
            df[d["name"]] = ((ms % 86_400_000) // 3_600_000).astype("float64")
    return df


def aggregate(rows, codes, n_users, f):
    """One aggregate feature for all users (array indexed by user code)."""
    agg = f["agg"]
    m = cond_mask(rows, f.get("filter", []))
    if "window_days" in f:
        m &= rows["days_before_as_of"].to_numpy() <= f["window_days"]
    out = np.full(n_users, np.nan)
    present = np.unique(codes)
    if agg in ("count", "sum", "n_unique"):
        out[present] = 0.0
    c = codes[m]
    if agg == "count":
        out[present] = np.bincount(c, minlength=n_users)[present]
        return out
    if agg in ("days_since_last", "days_since_first"):
        v = rows["days_before_as_of"].to_numpy()[m]
        fn = "min" if agg == "days_since_last" else "max"
    else:
        v = rows[f["column"]][m]
        fn = {"sum": "sum", "mean": "mean", "max": "max", "min": "min", "std": "std",
              "n_unique": "nunique"}[agg]
        if agg != "n_unique":
            v = pd.to_numeric(v, errors="coerce").astype("float64").to_numpy()
    g = pd.Series(v).groupby(c).agg(fn)
    out[g.index.to_numpy()] = g.to_numpy(dtype="float64")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="directory of raw tables (sesame datasets generate)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="models/default",
                    help="pipeline.toml for the features; scorecard.json for the scaling and bands")
    ap.add_argument("--train-sample", type=int, default=50_000,
                    help="labelled users the scorecard is fitted on")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    t0 = time.perf_counter()
    steps = {}
    spec = tomllib.load(open(f"{args.model}/pipeline.toml", "rb"))
    model = json.load(open(f"{args.model}/scorecard.json"))
    key = spec["pipeline"]["key"]
    tables = spec["tables"]
    feats = spec["feature"]
    as_of_ts = pd.Timestamp(AS_OF)
    as_of_days = int(as_of_ts.value // 1_000_000_000 // 86_400)

    # --- read ---
    t = time.perf_counter()
    users = read(f"{args.data}/users.parquet")
    raw = {name: read(f"{args.data}/{name}.parquet") for name in tables}
    labels = read(f"{args.data}/labels.parquet")
    steps["read"] = time.perf_counter() - t
    log(f"read {len(users)} users, " + ", ".join(f"{n} {len(d)}" for n, d in raw.items()), t0)

    # --- features ---
    t = time.perf_counter()
    n = len(users)
    code_of = pd.Index(users[key])
    X = {}
    for f in feats:
        if f["kind"] == "attribute":
            s = users[f["column"]]
            if f.get("transform") == "days_since":
                s = age_days(s, as_of_ts)
            elif f.get("transform") == "months_since":
                s = age_days(s, as_of_ts) / 30.4375
            X[f["name"]] = s.astype("float64").to_numpy() if f["type"] != "category" else s.to_numpy()
    for name, table in tables.items():
        agg_feats = [f for f in feats if f["kind"] == "aggregate" and f["table"] == name]
        shared = [f for f in feats if f["kind"] == "shared" and f["table"] == name]
        if not agg_feats and not shared:
            continue
        rows = event_rows(raw[name], table, as_of_ts, as_of_days)
        if "edges" in table:
            a, b = table["edges"]["from"], table["edges"]["to"]
            rest = [c for c in rows.columns if c not in (a, b)]
            rows = pd.concat([rows[[a, b] + rest].rename(columns={a: key, b: "__nbr"}),
                              rows[[b, a] + rest].rename(columns={b: key, a: "__nbr"})],
                             ignore_index=True)
        codes = code_of.get_indexer(rows[key])
        keep = codes >= 0
        if not keep.all():
            rows, codes = rows[keep].reset_index(drop=True), codes[keep]
        for f in agg_feats:
            X[f["name"]] = aggregate(rows, codes, n, f)
        for f in shared:
            r = rows[rows[f["column"]].notna()]
            if "window_days" in f:
                r = r[r["days_before_as_of"] <= f["window_days"]]
            pairs = r[[key, f["column"]]].drop_duplicates()
            both = pairs.merge(pairs.rename(columns={key: "__other"}), on=f["column"])
            both = both[both[key] != both["__other"]]
            cnt = both.groupby(key)["__other"].nunique()
            out = np.full(n, np.nan)
            out[code_of.get_indexer(pairs[key].unique())] = 0.0
            out[code_of.get_indexer(cnt.index)] = cnt.to_numpy(dtype="float64")
            X[f["name"]] = out
        del rows
    feats_df = pd.DataFrame(X)
    feats_df[key] = users[key].to_numpy()
    # neighbours: one hop over the edge table, on the neighbours' own-rows values
    for f in feats:
        if f["kind"] != "neighbors":
            continue
        table = tables[f["table"]]
        e = event_rows(raw[f["table"]].copy(), table, as_of_ts, as_of_days)
        a, b = table["edges"]["from"], table["edges"]["to"]
        if f.get("edge_kinds"):
            e = e[e["kind"].isin(f["edge_kinds"])]
        e = pd.concat([e[[a, b]].set_axis([key, "__nbr"], axis=1),
                       e[[b, a]].set_axis([key, "__nbr"], axis=1)], ignore_index=True)
        cols = sorted({c["column"] for c in f.get("filter", [])} | ({f["of"]} if f.get("of") else set()))
        vals = feats_df[[key] + cols].rename(columns={key: "__nbr"})
        j = e.merge(vals, on="__nbr", how="left")
        m = cond_mask(j, f.get("filter", []))
        if f["agg"] in ("share", "count"):
            g = pd.Series(m.astype("float64")).groupby(j[key].to_numpy())
            g = g.mean() if f["agg"] == "share" else g.sum()
        else:
            v = j[f["of"]].astype("float64").where(m)
            g = v.groupby(j[key].to_numpy()).agg(f["agg"])
        out = np.full(n, np.nan)
        out[code_of.get_indexer(g.index)] = g.to_numpy(dtype="float64")
        feats_df[f["name"]] = out
    for f in feats:
        if f["kind"] == "ratio":
            num, den = feats_df[f["numerator"]], feats_df[f["denominator"]]
            feats_df[f["name"]] = (num / den).where((den != 0) & den.notna() & num.notna())
    del raw
    steps["features"] = time.perf_counter() - t
    names = [f["name"] for f in feats if f["kind"] != "two_hop"]
    log(f"features: {len(names)} computed", t0)

    # --- fit (a training sample of labelled users) ---
    t = time.perf_counter()
    from optbinning import BinningProcess, Scorecard
    from sklearn.linear_model import LogisticRegression

    steps["import optbinning"] = time.perf_counter() - t
    t = time.perf_counter()
    cat = [f["name"] for f in feats if f.get("type") == "category" and f["name"] in names]
    lab = labels.merge(feats_df[[key]], on=key)
    lab = lab.sample(n=min(args.train_sample, len(lab)), random_state=args.seed)
    train = feats_df.set_index(key).loc[lab[key], names]
    y = lab["defaulted"].astype(int).to_numpy()
    bp = BinningProcess(variable_names=names, categorical_variables=cat)
    scaling = model["scaling"]  # the model's: points at odds, points to double the odds
    sc = Scorecard(binning_process=bp, estimator=LogisticRegression(max_iter=1000),
                   scaling_method="pdo_odds",
                   scaling_method_params={"pdo": scaling["pdo"], "odds": scaling["base_odds"],
                                          "scorecard_points": scaling["base_score"]})
    sc.fit(train, y)
    steps["fit"] = time.perf_counter() - t
    log(f"fitted on {len(train)} labelled users", t0)

    # --- score everyone ---
    t = time.perf_counter()
    Xall = feats_df[names]
    score = np.rint(sc.score(Xall)).clip(350, 950).astype("int32")
    pd_ = sc.predict_proba(Xall)[:, 1]
    bands = model["bands"]
    band = pd.cut(score, [bands[0]["min"] - 1] + [b["max"] for b in bands],
                  labels=[b["band"] for b in bands]).astype(str)
    steps["score"] = time.perf_counter() - t
    log(f"scored {len(Xall)} users", t0)

    t = time.perf_counter()
    pd.DataFrame({key: feats_df[key], "score": score, "band": band, "pd": pd_}).to_parquet(
        args.out, compression="zstd", index=False)
    steps["write"] = time.perf_counter() - t
    total = time.perf_counter() - t0
    log(f"wrote {args.out}", t0)
    no_fit = total - steps["fit"] - steps["import optbinning"]
    print(
        f"users {n}  total {total:.1f}s ({n / total:.0f} users/s)  without import+fit {no_fit:.1f}s "
        f"({n / no_fit:.0f} users/s)  " + "  ".join(f"{k} {v:.1f}s" for k, v in steps.items())
    )


if __name__ == "__main__":
    main()
