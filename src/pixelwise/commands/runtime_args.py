"""The --device / --precision / --channels-last flags, the same on every command.

The words are `pixelwise.runtime`'s (one vocabulary for commands, configs and the library);
old spellings (`--amp off`, `--precision float32`) are still read, with a one-line note.
"""

from __future__ import annotations

import argparse
from typing import Callable


def _word(kind: str, flag: str, note: bool = True) -> Callable[[str], str]:
    def parse(text: str) -> str:
        from pixelwise import runtime  # imports torch: only when a command line is parsed
        from pixelwise.errors import ConfigError

        normalize = runtime.normalize_precision if kind == "precision" else runtime.normalize_channels_last
        try:
            return normalize(text, flag, note) if kind == "precision" else normalize(text, flag)
        except ConfigError as exc:  # argparse names the flag itself
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{flag}: ")) from None

    return parse


class _OldAmp(argparse.Action):
    """`--amp WORD` (the old flag) sets --precision, with a note."""

    def __call__(self, parser, namespace, value, option_string=None):  # noqa: ANN001
        from pixelwise.runtime import deprecation_note

        word = _word("precision", "--amp", note=False)(value)
        deprecation_note(f"--amp {value}", f"--precision {word}")
        namespace.precision = word


def add_runtime_arguments(parser: argparse.ArgumentParser, note: str = "") -> None:
    suffix = f" ({note})" if note else ""
    parser.add_argument("--device", default="auto", help=f"auto, cpu, cuda, cuda:N{suffix}")
    parser.add_argument("--precision", default="auto", type=_word("precision", "--precision"),
                        help=f"auto, fp32, bf16, fp16: auto = bf16 where it is a measured speed-up{suffix}")
    parser.add_argument("--channels-last", default="auto", type=_word("channels_last", "--channels-last"),
                        help=f"auto, on, off: auto = on with bf16/fp16{suffix}")
    parser.add_argument("--amp", action=_OldAmp, help=argparse.SUPPRESS)


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    """--backend auto|torch|onnxruntime (predict, evaluate, serve). The default, auto, may be
    changed with the environment variable PIXELWISE_BACKEND (the test suite sets torch)."""
    import os

    parser.add_argument("--backend", choices=["auto", "torch", "onnxruntime"],
                        default=os.environ.get("PIXELWISE_BACKEND") or "auto",
                        help="what runs a checkpoint: auto = the faster of PyTorch (at --precision) and "
                             "onnxruntime fp32, measured once per checkpoint and CPU and cached beside the "
                             "checkpoint; onnxruntime is used only when its logits match PyTorch fp32")
