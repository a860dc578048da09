"""`edgefl data status|download|import`: get datasets onto a board, with or without internet."""

from __future__ import annotations

import argparse
import json
import sys

from edgefld.cli.common import add_config_argument, bounded_int, load_from_args
from edgefld.config.schema import key
from edgefld.data.sources import DATASETS
from edgefld.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "data", help="show, download or import datasets (stored once under data_dir)",
        description="Datasets are stored once, preprocessed, under [client] data_dir (or --data-dir).",
    )
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    status = commands.add_parser("status", help="which datasets are ready")
    status.add_argument("--verify", action="store_true", help="also check every file's checksum")
    status.add_argument("--json", action="store_true")
    status.add_argument("--partitions", action="store_true",
                        help="each partition's size and label histogram, as the boards split the [server] task's "
                             "dataset ([server] num_partitions, partitioning, dirichlet_alpha; flags below)")
    status.add_argument("--dataset", choices=list(DATASETS), help="with --partitions: default the [server] task's")
    status.add_argument("--num-partitions", type=bounded_int(1, 100_000), metavar="N",
                        help="with --partitions: default [server] num_partitions")
    status.add_argument("--partitioning", choices=key("server", "partitioning").choices,
                        help="with --partitions: default [server] partitioning")
    status.add_argument("--dirichlet-alpha", type=float, metavar="ALPHA",
                        help="with --partitions: default [server] dirichlet_alpha")
    status.set_defaults(handler=run_status)

    download = commands.add_parser(
        "download", help="download a dataset from its canonical source (digits: rebuilt from the shipped copy)")
    download.add_argument("dataset", choices=list(DATASETS))
    download.add_argument("--quiet", action="store_true", help="no progress bar")
    download.set_defaults(handler=run_download)

    importer = commands.add_parser(
        "import", help="import the original files (for boards without internet)",
        description="PATH: a directory with MNIST's four IDX files (.gz or not), cifar-10-python.tar.gz, "
                    "or an extracted cifar-10-batches-py directory.",
    )
    importer.add_argument("path")
    importer.set_defaults(handler=run_import)

    for sub in (status, download, importer):
        add_config_argument(sub)
        sub.add_argument("--data-dir", metavar="DIR", help="default: [client] data_dir of the config")


def _data_dir(args: argparse.Namespace) -> str:
    if args.data_dir is not None:
        if not args.data_dir:
            raise ConfigError("an empty path; give a directory", key="--data-dir")
        given: str = args.data_dir
        return given
    configured: str = load_from_args(args, optional=True).client.data_dir
    return configured


def run_status(args: argparse.Namespace) -> int:
    from edgefld.data import dataset_status

    if args.partitions:
        return run_partitions(args)
    data_dir = _data_dir(args)
    statuses = [dataset_status(name, data_dir, verify=args.verify) for name in DATASETS]
    if args.json:
        json.dump([s.to_json() for s in statuses], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for s in statuses:
            if s.ready:
                print(f"{s.name:<8} ready    {s.train_count} train / {s.test_count} test, "
                      f"{(s.size_bytes or 0) / 1e6:.1f} MB in {s.path}")
            else:
                print(f"{s.name:<8} missing  {s.problem}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from edgefld.data import download_dataset

    data_dir = _data_dir(args)
    download_dataset(args.dataset, data_dir, quiet=args.quiet)
    print(f"{args.dataset}: stored in {data_dir}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from edgefld.data import import_dataset

    data_dir = _data_dir(args)
    name = import_dataset(args.path, data_dir)
    print(f"{name}: imported from {args.path} into {data_dir}")
    return 0


def run_partitions(args: argparse.Namespace) -> int:
    from edgefld.data import DEFAULT_PARTITION_SEED, partition_summaries
    from edgefld.tasks import get_task

    server = load_from_args(args, optional=True).server
    dataset = args.dataset or get_task(server.task).dataset
    num_partitions = args.num_partitions or server.num_partitions
    partitioning = args.partitioning or server.partitioning
    alpha = server.dirichlet_alpha
    if args.dirichlet_alpha is not None:
        try:
            alpha = key("server", "dirichlet_alpha").validate(args.dirichlet_alpha)
        except ValueError as exc:
            raise ConfigError(str(exc), key="--dirichlet-alpha") from None
    summaries = partition_summaries(dataset, _data_dir(args), num_partitions, DEFAULT_PARTITION_SEED, partitioning,
                                    alpha)
    if args.json:
        json.dump({"dataset": dataset, "partitioning": partitioning, "alpha": alpha if partitioning != "iid" else None,
                   "partitions": [{"cid": s.cid, "size": s.size, "labels": list(s.label_counts)} for s in summaries]},
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    split = f"dirichlet, alpha {alpha:g}" if partitioning == "dirichlet" else "iid"
    print(f"{dataset}: {num_partitions} partitions ({split}, seed {DEFAULT_PARTITION_SEED}); "
          "training samples per label, before the 90/10 validation split")
    classes = len(summaries[0].label_counts) if summaries else 0
    print(f"{'cid':>5} {'size':>7}  " + " ".join(f"{label:>6}" for label in range(classes)))
    for s in summaries:
        print(f"{s.cid:>5} {s.size:>7}  " + " ".join(f"{count:>6}" for count in s.label_counts))
    return 0
