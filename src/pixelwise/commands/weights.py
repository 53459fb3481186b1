"""`pixelwise weights list|fetch|add|verify|path`: the pretrained-weights catalogue and cache."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "weights", help="pretrained encoder weights: list, fetch, add, verify, path",
        description="A catalogue of public pretrained encoder weights. Nothing is downloaded except by "
                    "`weights fetch`; every file is checked against its published digest before first use. "
                    "The cache is $PIXELWISE_HOME/weights (default ~/.cache/pixelwise/weights).")
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)

    p = sub.add_parser("list", help="the catalogue and what is in the cache")
    p.add_argument("--json", action="store_true", help="print every field as JSON")
    p.set_defaults(func=run_list)

    p = sub.add_parser("fetch", help="download weights into the cache (resumable) and verify them")
    p.add_argument("names", nargs="+", metavar="NAME", help="catalogue names, e.g. resnet34.imagenet")
    p.add_argument("--accept-licence", "--accept-license", action="store_true", dest="accept_licence",
                   help="accept a non-commercial licence (MiT weights need it)")
    p.add_argument("--url", help="download from this URL instead (the digest is still checked)")
    p.add_argument("--print-url", action="store_true",
                   help="only print where to download from (for a machine without network access)")
    p.set_defaults(func=run_fetch)

    p = sub.add_parser("add", help="verify a file you downloaded elsewhere and put it in the cache")
    p.add_argument("file", help="the downloaded weights file")
    p.add_argument("--name", help="catalogue name, when the file was renamed")
    p.add_argument("--accept-licence", "--accept-license", action="store_true", dest="accept_licence")
    p.set_defaults(func=run_add)

    p = sub.add_parser("verify", help="re-hash cached weights against their pinned sha256")
    p.add_argument("names", nargs="*", metavar="NAME", help="default: every cached entry")
    p.set_defaults(func=run_verify)

    p = sub.add_parser("path", help="print the cached file of NAME, or the cache folder")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.set_defaults(func=run_path)


def _size(entry) -> str:
    size = entry.size_hint
    if size is None:
        return "?"
    return f"{'' if entry.size_bytes is not None else '~'}{size / 2**20:.1f} MiB"


def run_list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from pixelwise.weights import cached, list_weights

    entries = list_weights()
    if args.json:
        rows = []
        for entry in entries:
            found = cached(entry)
            rows.append({**asdict(entry), "cached": str(found.path) if found else None,
                         "pinned_sha256": found.sha256 if found else None, "fetch": entry.fetch_command()})
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(e.name) for e in entries)
    print(f"{'name':<{width}}  {'size':>10}  {'digest':<15}  {'cached':<6}  licence")
    for entry in entries:
        digest = "sha256" if entry.full_digest else f"prefix {entry.digest}"
        mark = "yes" if cached(entry) else "-"
        licence = entry.licence if entry.commercial_use else f"{entry.licence} [--accept-licence]"
        print(f"{entry.name:<{width}}  {_size(entry):>10}  {digest:<15}  {mark:<6}  {licence}")
    return 0


class _Progress:
    """A line per 10 % on stderr (a log-friendly bar)."""

    def __init__(self, name: str):
        self.name, self.shown = name, -1

    def __call__(self, done: int, total: int | None) -> None:
        if not total:
            return
        tenth = done * 10 // total
        if tenth != self.shown:
            self.shown = tenth
            print(f"{self.name}: {done / 2**20:.1f}/{total / 2**20:.1f} MiB", file=sys.stderr, flush=True)


def run_fetch(args: argparse.Namespace) -> int:
    from pixelwise.weights import check_licence, fetch, file_path, get_weights, source_urls

    entries = [get_weights(name) for name in args.names]
    if args.print_url:
        for entry in entries:
            print(f"{entry.name}:")
            for url in source_urls(entry):
                print(f"  {url}")
            digest = f"sha256 {entry.digest}" if entry.full_digest else f"sha256 starting {entry.digest}"
            print(f"  expect {digest}; then: pixelwise weights add DOWNLOADED_FILE"
                  f"{'' if entry.commercial_use else ' --accept-licence'}")
        return 0
    for entry in entries:  # refuse before any download, not halfway through a list
        check_licence(entry, args.accept_licence)
    for entry in entries:
        print(f"fetching {entry.name} into {file_path(entry).parent}", file=sys.stderr)
        found = fetch(entry, accept_licence=args.accept_licence, urls=[args.url] if args.url else None,
                      progress=_Progress(entry.name))
        print(f"{entry.name}: {found.path} (sha256 {found.sha256})")
    return 0


def run_add(args: argparse.Namespace) -> int:
    from pixelwise.weights import add

    found = add(args.file, args.name, accept_licence=args.accept_licence)
    print(f"{found.entry.name}: verified, {found.path} (sha256 {found.sha256})")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from pixelwise.errors import WeightsError
    from pixelwise.weights import cached, get_weights, list_weights, verify

    entries = [get_weights(n) for n in args.names] if args.names else [e for e in list_weights() if cached(e)]
    if not entries:
        print("no weights in the cache")
        return 0
    failed = 0
    for entry in entries:
        try:
            found = verify(entry)
            print(f"{entry.name}: ok (sha256 {found.sha256})")
        except WeightsError as exc:
            failed += 1
            print(f"{entry.name}: FAILED: {exc}")
    return 2 if failed else 0


def run_path(args: argparse.Namespace) -> int:
    from pixelwise.weights import get_weights, require, weights_dir

    if args.name is None:
        print(weights_dir())
        return 0
    print(require(get_weights(args.name)).path)
    return 0
