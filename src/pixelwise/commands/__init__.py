"""Command-line subcommands, one module each.

Each module defines `register(subparsers)`, which adds its parser(s) and sets
`func=handler` via `set_defaults`. Handlers are thin: they parse flags, call one library
function and print. Heavy imports (torch, onnx, the web server) happen inside handlers so
`pixelwise --help` stays instant.
"""

COMMAND_MODULES = [
    "quickstart",
    "train",
    "plan",
    "evaluate",
    "evaluate_masks",
    "calibrate",
    "predict",
    "export",
    "data",
    "models",
    "report",
    "serve",
    "bench",
    "weights",
]
