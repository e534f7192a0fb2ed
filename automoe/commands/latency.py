"""`automoe latency {measure,collect,fit}`: measured latency, latency datasets, predictors."""

from __future__ import annotations

import argparse
import dataclasses
import json

from automoe.costs.latency import LatencyProtocol

__all__ = ["register", "protocol_from_args", "add_protocol_args"]


def add_protocol_args(p: argparse.ArgumentParser) -> None:
    """The `LatencyProtocol` options (defaults: HAT's WMT protocol)."""
    d = LatencyProtocol()
    g = p.add_argument_group("latency protocol (defaults follow HAT)")
    g.add_argument("--device", default=d.device, help="cpu or cuda[:N] (default: %(default)s)")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch during the measurement (default: torch's current setting)")
    g.add_argument("--dtype", default=d.dtype, choices=("float32", "float16", "bfloat16"))
    g.add_argument("--runtime", default=d.runtime, choices=("torch", "onnxruntime"),
                   help="run the model in torch, or export it to ONNX (in a temporary "
                        "directory) and run it in ONNX Runtime on CPU (needs the onnx extra; "
                        "default: %(default)s)")
    g.add_argument("--clock", default=d.clock, choices=("wall", "thread_cpu"),
                   help="wall clock (default), or the thread's CPU time (CPU, --threads 1): "
                        "stable on a shared machine, but not a latency")
    g.add_argument("--batch", type=int, default=d.batch, help="sentences per batch (default: %(default)s)")
    g.add_argument("--seq-len", type=int, default=None,
                   help="sets both --src-len and --tgt-len (HAT: 30 for WMT, 23 for IWSLT)")
    g.add_argument("--src-len", type=int, default=d.src_len, help="source tokens (default: %(default)s)")
    g.add_argument("--tgt-len", type=int, default=d.tgt_len,
                   help="incremental decoder steps (default: %(default)s)")
    g.add_argument("--beam", type=int, default=d.beam, help="beam as batch rows (default: %(default)s)")
    g.add_argument("--warmup", type=int, default=d.warmup, help="warm-up runs (default: %(default)s)")
    g.add_argument("--runs", type=int, default=d.runs, help="timed runs (default: %(default)s)")
    g.add_argument("--vocab-size", type=int, default=d.vocab_size,
                   help="vocabulary of the measured model (default: %(default)s, the data "
                        "pipeline's default; with --data, the data's vocabulary)")
    g.add_argument("--seed", type=int, default=d.seed, help="seeds inputs and subnets (default: %(default)s)")
    g.add_argument("--data", default=None, metavar="DIR",
                   help="use real source sentences from a prepared data dir instead of random ids")
    g.add_argument("--split", default="valid", help="split of --data (default: %(default)s)")
    g.add_argument("--n-sentences", type=int, default=10,
                   help="first N sentences of the split (default: %(default)s)")


def protocol_from_args(args: argparse.Namespace) -> LatencyProtocol:
    src_len = tgt_len = args.seq_len
    sentences = None
    vocab_size = args.vocab_size
    if args.data:
        from automoe.costs.subnet_latency import data_sentences

        vocab_size, sentences = data_sentences(args.data, args.split, args.n_sentences)
    return LatencyProtocol(
        device=args.device, threads=args.threads, dtype=args.dtype, batch=args.batch,
        src_len=src_len or args.src_len, tgt_len=tgt_len or args.tgt_len, beam=args.beam,
        warmup=args.warmup, runs=args.runs, vocab_size=vocab_size, seed=args.seed,
        sentences=sentences, clock=args.clock, runtime=args.runtime,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("latency", help="measure latency, collect latency datasets, fit predictors",
                              description=__doc__)
    sub = p.add_subparsers(dest="latency_command", metavar="ACTION", required=True)

    m = sub.add_parser("measure", help="measure one subnet's latency on this device",
                       description="Measure the latency of one subnet (a randomly initialised model: "
                                   "latency depends on weights only through MoE routing) under the "
                                   "protocol; prints median, HAT's trimmed mean, spread and the device.")
    m.add_argument("config", metavar="CONFIG", help="subnet JSON (or HAT/AutoMoE subnet YAML)")
    m.add_argument("--space", default=None,
                   help="search space name or YAML path (default with --supernet: its space)")
    m.add_argument("--supernet", default=None, metavar="RUN",
                   help="measure the subnet extracted from this trained supernet (run dir or "
                        "checkpoint file): its routers route like the trained model")
    m.add_argument("--checkpoint", default="last", choices=("last", "best"),
                   help="which checkpoint of --supernet RUN (default: %(default)s)")
    m.add_argument("--cache", default=None, metavar="FILE.jsonl",
                   help="latency cache (reuse a measurement with the same fingerprint, subnet, protocol)")
    m.add_argument("--json", action="store_true", help="print one JSON object (with raw samples)")
    add_protocol_args(m)
    m.set_defaults(func=_measure)

    c = sub.add_parser("collect", help="measure random subnets into a latency dataset (CSV, resumable)",
                       description="Measure N random subnets of a space into a CSV (features, stats, "
                                   "raw samples, fingerprint). Rerunning skips subnets already in the file.")
    c.add_argument("--space", required=True, help="search space name or YAML path")
    c.add_argument("-n", type=int, required=True, help="subnets in the finished dataset")
    c.add_argument("--out", required=True, metavar="FILE.csv")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    add_protocol_args(c)
    c.set_defaults(func=_collect)

    f = sub.add_parser("fit", help="fit a latency predictor on a latency table",
                       description="Fit a latency predictor on one device's latency table and "
                                   "report MAPE, RMSE and Kendall tau on held-out rows (80/10/10 "
                                   "split, --seed) beside the other kinds fitted. --kind analytic "
                                   "(default): per-layer cost terms fitted by least absolute "
                                   "relative error; linear: ridge least squares; mlp: HAT's MLP "
                                   "(3x400); auto: all three, the lowest validation MAPE kept. "
                                   "--format automoe: a dataset of `latency collect`; hat: "
                                   "HAT's published tables (10 averaged features, encoder + "
                                   "decoder mean latency); columns: any CSV, with --features and "
                                   "--target.")
    f.add_argument("dataset", metavar="TABLE.csv")
    f.add_argument("-o", "--out", required=True, metavar="PREDICTOR_DIR")
    f.add_argument("--format", default="automoe", choices=("automoe", "hat", "columns"),
                   help="the table's format (default: %(default)s)")
    f.add_argument("--features", default=None, metavar="COLS",
                   help="--format columns: comma-separated feature columns")
    f.add_argument("--target", default=None, metavar="COLS",
                   help="column(s) to predict, summed (default: latency_ms; hat: "
                        "latency_mean_encoder,latency_mean_decoder)")
    # the kinds of automoe.costs.predictor.KINDS (not imported here: it loads torch)
    f.add_argument("--kind", default=None, choices=("analytic", "linear", "mlp", "auto"),
                   help="the model the predictor uses (default: analytic, the lowest MAPE on "
                        "HAT's published tables, docs/benchmarks.md)")
    f.add_argument("--steps", type=int, default=5000, help="MLP steps (--kind mlp or auto)")
    f.add_argument("--hidden-dim", type=int, default=400)
    f.add_argument("--hidden-layers", type=int, default=3)
    f.add_argument("--lr", type=float, default=1e-3)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--json", action="store_true", help="print the report as JSON")
    f.set_defaults(func=_fit)

    pr = sub.add_parser("predict", help="predict latency (ms) with a fitted predictor",
                        description="Print one predicted latency in ms per subnet config (JSON, "
                                    "a model dir, or a HAT/AutoMoE subnet YAML, which needs "
                                    "--space) or, with --table, per row of a CSV in the format "
                                    "the predictor was fitted on (extra columns ignored).")
    pr.add_argument("predictor", metavar="PREDICTOR_DIR")
    pr.add_argument("configs", nargs="*", metavar="CONFIG")
    pr.add_argument("--table", default=None, metavar="ROWS.csv")
    pr.add_argument("--space", default=None,
                    help="space to read subnet YAMLs with (default: the predictor's, else "
                         "hat_wmt14 for a HAT-table predictor)")
    pr.set_defaults(func=_predict)


def _measure(args: argparse.Namespace) -> int:
    from automoe.costs.subnet_latency import measure_subnet, supernet_weights_id
    from search_spaces import load_space
    from search_spaces.importers import read_subnet

    protocol = protocol_from_args(args)
    supernet = None
    if args.supernet:
        from automoe.checkpoints import load_supernet

        supernet, space = load_supernet(args.supernet, which=args.checkpoint)
        config = read_subnet(args.config, load_space(args.space) if args.space else space).config
        space.validate(config, source=f"{args.config} (space of {args.supernet})")
        protocol = dataclasses.replace(protocol, vocab_size=supernet.vocab_size,
                                       weights=supernet_weights_id(args.supernet, args.checkpoint))
    else:
        if not args.space:
            raise ValueError("latency measure: give --space (or --supernet RUN)")
        space = load_space(args.space)
        config = read_subnet(args.config, space).config
    result, cached = measure_subnet(config, protocol, supernet=supernet, cache=args.cache)
    d = result.to_dict()
    d["cached"] = cached
    d["protocol_text"] = protocol.describe()
    if args.json:
        print(json.dumps(d))
        return 0
    fp = result.fingerprint
    print(f"subnet {config.key()} ({space.name}){' [cached]' if cached else ''}")
    runtime = f"onnxruntime {fp['onnxruntime']} | " if "onnxruntime" in fp else ""
    print(f"device    {fp['device_name']} | {runtime}torch {fp['torch']} | {fp['threads']} threads "
          f"| {fp['dtype']}")
    print(f"protocol  {protocol.describe()}")
    print(f"latency   {d['latency_ms']:.2f} ms median | {d['trimmed_mean_ms']:.2f} ms 10-90% trimmed mean "
          f"| HAT enc+dec {d['hat_ms']:.2f} ms")
    print(f"spread    p10 {d['p10_ms']:.2f} | p90 {d['p90_ms']:.2f} | std {d['std_ms']:.2f} ms | "
          f"cv {d['cv']:.3f} | {d['runs']} samples")
    print(f"split     encoder {d['encoder_median_ms']:.2f} ms | decoder {d['decoder_median_ms']:.2f} ms (medians)")
    return 0


def _collect(args: argparse.Namespace) -> int:
    from automoe.costs.dataset import collect_latency_dataset
    from search_spaces import load_space

    if args.n < 1:
        raise ValueError(f"-n must be >= 1, got {args.n}")
    protocol = protocol_from_args(args)
    df = collect_latency_dataset(load_space(args.space), args.n, args.out, protocol,
                                 seed=args.seed, progress=not args.quiet)
    print(f"{args.out}: {len(df)} subnets | median latency {df['latency_ms'].median():.2f} ms "
          f"| protocol: {protocol.describe()}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from automoe.costs.predictor import PredictorConfig, fit_predictor

    kind = {"kind": args.kind} if args.kind else {}
    cfg = PredictorConfig(hidden_dim=args.hidden_dim, hidden_layers=args.hidden_layers,
                          steps=args.steps, lr=args.lr, seed=args.seed, **kind)
    if args.format == "automoe":
        from automoe.costs.dataset import dataset_features, read_latency_dataset

        df = read_latency_dataset(args.dataset)
        target = args.target or "latency_ms"
        if target not in df:
            raise ValueError(f"{args.dataset}: no column {target!r}")
        x, names = dataset_features(df)
        y = df[target].to_numpy()
        meta = {
            "format": "automoe",
            "space": str(df["space"].iloc[0]) if "space" in df else None,
            "dataset": str(args.dataset),
            "target": target,
            "fingerprint": json.loads(df["fingerprint"].iloc[0]),
            "fingerprint_id": str(df["fingerprint_id"].iloc[0]),
            "protocol": json.loads(df["protocol"].iloc[0]),
        }
    else:
        from automoe.costs.latency_tables import read_latency_table

        def columns(text: str | None) -> list[str] | None:
            return None if text is None else [c.strip() for c in text.split(",") if c.strip()]

        if args.format == "hat" and (args.features or args.target):
            raise ValueError("--format hat fixes the columns; --features/--target are for "
                             "--format columns")
        table = read_latency_table(args.dataset, fmt=args.format,
                                   features=columns(args.features), target=columns(args.target))
        x, names, y = table.x, list(table.features), table.y
        meta = {"format": args.format, "dataset": str(args.dataset),
                "target": "+".join(table.target)}
        if table.noise_floor_mape is not None:
            meta["noise_floor_mape"] = table.noise_floor_mape
    predictor, report = fit_predictor(x, y, names, cfg, meta=meta)
    predictor.save(args.out)
    if args.json:
        print(json.dumps(report))
        return 0
    how = ("lowest validation MAPE" if cfg.kind == "auto"
           else "--kind" if args.kind else "the default kind")
    print(f"{args.out}: predicts with {predictor.kind} ({how}) | "
          f"{report['n_train']}/{report['n_val']}/{report['n_test']} train/val/test subnets")
    if "noise_floor_mape" in meta:
        print(f"measurement spread (median std / mean of a row): {meta['noise_floor_mape']:.2f} %")
    print(f"{'held-out test':14s} {'MAPE %':>8s} {'RMSE ms':>9s} {'Kendall tau':>12s}")
    for kind, r in report["test"].items():
        tau = "n/a" if r["kendall_tau"] is None else f"{r['kendall_tau']:.3f}"
        print(f"{kind:14s} {r['mape']:8.2f} {r['rmse']:9.3f} {tau:>12s}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from automoe.costs.predictor import LatencyPredictor
    from automoe.io_utils import read_csv

    predictor = LatencyPredictor.load(args.predictor)
    if bool(args.table) == bool(args.configs):
        raise ValueError("give subnet CONFIG files or --table ROWS.csv (one of the two)")
    if args.table:
        values = predictor.predict_table(read_csv(args.table), source=str(args.table))
        names = [f"{args.table} row {i + 2}" for i in range(len(values))]
    else:
        from search_spaces import load_space
        from search_spaces.importers import read_subnet

        space_name = args.space or predictor.meta.get("space") or (
            "hat_wmt14" if predictor.table_format == "hat" else None)
        space = load_space(space_name) if space_name else None
        configs = [read_subnet(c, space if str(c).endswith((".yml", ".yaml")) else None).config
                   for c in args.configs]
        values = predictor.predict(configs, space if predictor.table_format == "automoe"
                                   else None)
        names = list(args.configs)
    for name, value in zip(names, values, strict=True):
        print(f"{value:.3f}\t{name}")
    return 0
