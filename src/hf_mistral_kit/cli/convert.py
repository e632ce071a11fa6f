"""`hf-mistral-kit convert`: a checkpoint from Hugging Face layout to Mistral's native one or back, or to GGUF."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

from .common import PROG, CLIError, ExitCode, existing_path
from .models import model_config, model_shape


def run(args: argparse.Namespace) -> int:
    from ..convert import convert_checkpoint

    src = existing_path(args.src, "Checkpoint")
    if not src.is_dir():
        raise CLIError(f"{src} is not a directory; SRC is a checkpoint directory.")
    dst = Path(args.dst).expanduser()
    dtype = getattr(args, "dtype", None)
    if args.to == "gguf":
        if dst.exists():
            raise CLIError(f"{dst} already exists; choose a new DST.")
        if dst.suffix != ".gguf":
            raise CLIError(f"DST {dst} is a GGUF file: give it the .gguf suffix.")
    elif dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise CLIError(f"{dst} already exists and is not an empty directory; choose a new DST.")
    elif dtype is not None:
        raise CLIError("--dtype applies to --to gguf; the safetensors layouts keep the weights' dtype.")
    if dst.resolve() == src.resolve():
        raise CLIError("SRC and DST are the same directory.")
    model_shape(model_config(str(src)), args.src)  # a config that cannot describe a model fails here, named
    start = time.perf_counter()
    # The library logs why a SIGTERM'd conversion ends (the process then dies with SIGTERM's status): in our format.
    said = logging.StreamHandler(sys.stderr)
    said.setFormatter(logging.Formatter(f"{PROG} convert: %(message)s"))
    logger = logging.getLogger("hf_mistral_kit.convert")
    logger.addHandler(said)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            written = convert_checkpoint(src, dst, to=args.to, dtype=dtype)
    except FileNotFoundError as error:
        raise CLIError(str(error), ExitCode.MISSING) from None
    except (ValueError, KeyError, OSError) as error:
        raise CLIError(f"cannot convert {src}: {error}") from None
    finally:
        logger.removeHandler(said)
    for warning in caught:  # the kit's own (a staging folder cleaned up, a sliding window GGUF cannot store)
        if issubclass(warning.category, UserWarning) and type(warning.message) is UserWarning:
            print(f"note: {warning.message}", file=sys.stderr)
    layout = {"hf": "Hugging Face checkpoint", "native": "native checkpoint", "gguf": "GGUF file"}[args.to]
    print(f"wrote the {layout} {written or dst} in {time.perf_counter() - start:.1f} s.")
    return ExitCode.OK
