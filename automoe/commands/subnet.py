"""`automoe subnet import|sample|task`: HAT/AutoMoE subnet YAML to JSON; random valid
subnets; one task's model out of a task-routed model dir."""

from __future__ import annotations

import argparse
import random

from automoe.io_utils import atomic_write_text
from search_spaces import load_space
from search_spaces.importers import import_hat_yaml

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "subnet", help="import HAT/AutoMoE subnet files; sample random subnets",
        description="Work with single subnets (SubnetConfig JSON, the format every other "
                    "command reads).")
    sub = p.add_subparsers(dest="subnet_command", metavar="ACTION", required=True)
    imp = sub.add_parser(
        "import", help="convert a HAT/AutoMoE subnet YAML to SubnetConfig JSON",
        description="Read a subnet YAML as HAT or AutoMoE publish them (keys such as "
                    "encoder-embed-dim-subtransformer, encoder-n-experts, "
                    "encoder-each-expert-ffn-dim-listoflist), map HAT's arbitrary attention "
                    "-1/1/2 to 1/2/3, drop values beyond the active layers, validate the result "
                    "against --space and write it as JSON (stdout unless -o).")
    imp.add_argument("file", metavar="FILE", help="HAT/AutoMoE subnet .yml")
    imp.add_argument("--space", required=True, metavar="NAME|PATH", help="space to validate against")
    imp.add_argument("-o", "--out", metavar="OUT.json", help="write here (atomically) instead of stdout")
    imp.set_defaults(func=_import)
    smp = sub.add_parser(
        "sample", help="print K random valid subnets as JSON lines",
        description="Draw K subnets from --space with random.Random(SEED), each gene uniform "
                    "over its allowed choices, and print one SubnetConfig JSON per line.")
    smp.add_argument("--space", required=True, metavar="NAME|PATH", help="space to sample")
    smp.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    smp.add_argument("-n", type=int, default=1, metavar="K", help="how many (default %(default)s)")
    smp.set_defaults(func=_sample)
    task = sub.add_parser(
        "task", help="write what one target language of a task-routed model uses",
        description="Read a model dir (automoe export / train / retrain) whose MoE layers route "
                    "by task, and write the model that serves target language LANG alone: "
                    "each task-routed layer becomes one dense FFN over the hidden units of the "
                    "experts LANG's tag selects, their gates folded into the output matrix "
                    "(supernet.task_extract). It computes what the routed model computes on "
                    "LANG's sentences.")
    task.add_argument("model_dir", metavar="MODEL_DIR")
    task.add_argument("--task", required=True, metavar="LANG", help="target language")
    task.add_argument("-o", "--out", required=True, metavar="OUT_DIR", help="model dir to write")
    task.add_argument("--data", metavar="DIR", help="data dir whose spm.model to use if "
                                                   "MODEL_DIR has none")
    task.add_argument("--overwrite", action="store_true", help="replace OUT_DIR")
    task.set_defaults(func=_task)


def _import(args: argparse.Namespace) -> int:
    config = import_hat_yaml(args.file, load_space(args.space))
    text = config.to_json(indent=2) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
        print(f"{args.out}: subnet {config.key()}")
    else:
        print(text, end="")
    return 0


def _sample(args: argparse.Namespace) -> int:
    if args.n < 0:
        raise ValueError(f"-n must be >= 0, got {args.n}")
    space = load_space(args.space)
    rng = random.Random(args.seed)
    for _ in range(args.n):
        print(space.sample(rng).to_json())
    return 0


def _task(args: argparse.Namespace) -> int:
    from automoe.export import write_task_model

    out = write_task_model(args.model_dir, args.task, args.out, data_dir=args.data,
                           overwrite=args.overwrite)
    print(f"{out}: task {args.task} of {args.model_dir} ({out / 'config.json'})")
    return 0
