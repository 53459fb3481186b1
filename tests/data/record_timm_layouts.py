"""Record timm's real state-dict layouts (parameter names, order, shapes) into timm_state_dict_layouts.json.

Needs timm (not a pixelwise dependency). The encoder tests read the JSON instead, so they
check the weight loader against timm's own names and order, never against pixelwise's:

    python tests/data/record_timm_layouts.py [--commit SHA]

`--commit` records which huggingface/pytorch-image-models commit the imported timm was
built from (or checked against), so a reader can open the same source files.
"""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path

MODELS = ["mobilenetv3_large_100", "resnet18"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", default="", help="the pytorch-image-models commit of the timm source used")
    args = parser.parse_args()
    import timm

    layouts, sources = {}, set()
    for name in MODELS:
        model = timm.create_model(name, pretrained=False)  # the architecture only; nothing is downloaded
        sources.add("timm/models/" + Path(inspect.getsourcefile(type(model))).name)
        layouts[name] = [[key, list(value.shape)] for key, value in model.state_dict().items()]
    commit = f" at commit {args.commit}" if args.commit else ""
    header = {
        "_comment": (f"timm's own state_dict() names, order and shapes (timm {timm.__version__}, "
                     f"timm.create_model(name, pretrained=False)), defined in {', '.join(sorted(sources))} of "
                     f"github.com/huggingface/pytorch-image-models{commit}. "
                     "Written by tests/data/record_timm_layouts.py; do not edit by hand."),
        "timm_version": timm.__version__,
        "source_commit": args.commit or None,
    }
    # One tensor per line keeps the file small and its diffs readable.
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in header.items()] + [' "models": {']
    for i, (name, rows) in enumerate(layouts.items()):
        body = ",\n".join(f"   {json.dumps(row)}" for row in rows)
        lines.append(f"  {json.dumps(name)}: [\n{body}\n  ]" + ("," if i < len(layouts) - 1 else ""))
    lines += [" }", "}"]
    path = Path(__file__).with_name("timm_state_dict_layouts.json")
    path.write_text("\n".join(lines) + "\n")
    json.loads(path.read_text())  # still valid JSON
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
