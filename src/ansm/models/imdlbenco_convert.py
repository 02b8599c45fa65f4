"""``python -m ansm.models.imdlbenco_convert NAME CHECKPOINT --out PATH``: IMDLBenCo checkpoint -> ansm checkpoint.

``ansm train`` records its localizer as a spec and ``ansm defend`` rebuilds it from that spec, without
``--weights``; an IMDLBenCo checkpoint converted once into an ansm localizer checkpoint (safetensors + JSON,
architecture ``imdlbenco:<NAME>``) is such a spec, usable as ``--model PATH`` by every command. The checkpoint
is read with ``torch.load(weights_only=True)`` (see :func:`~ansm.models.imdlbenco.read_imdlbenco_checkpoint`).
A separate module from :mod:`ansm.models.imdlbenco` because ``python -m`` on a module that the package
already imported (it registers the zoo names) runs it twice.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ansm.errors import AnsmError
from ansm.models.imdlbenco import ZOO, build_imdlbenco, load_imdlbenco_checkpoint, read_imdlbenco_checkpoint
from ansm.models.registry import save_localizer


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ansm.models.imdlbenco_convert NAME CHECKPOINT --out PATH``: an IMDLBenCo checkpoint -> ansm checkpoint."""
    parser = argparse.ArgumentParser(
        prog="python -m ansm.models.imdlbenco_convert",
        description="Convert an IMDLBenCo checkpoint ({'model': state_dict}, read with weights_only=True) into an "
                    "ansm localizer checkpoint (safetensors + JSON) usable as --model PATH by every ansm command.",
        epilog="example: python -m ansm.models.imdlbenco_convert IML_ViT checkpoint-best.pth --out runs/benco/iml_vit")
    parser.add_argument("name", help=f"zoo model: {', '.join(ZOO)}")
    parser.add_argument("checkpoint", help="IMDLBenCo checkpoint (.pth) or safetensors state dict")
    parser.add_argument("--out", required=True, help="ansm checkpoint path to write (<out>.safetensors, <out>.json)")
    parser.add_argument("--size", type=int, default=None,
                        help="input side the model was trained at, for models with one (default: the official side)")
    args = parser.parse_args(argv)
    try:
        # Read the file first: a bad path or an unsafe file is reported before the zoo's heavy import.
        state = read_imdlbenco_checkpoint(args.checkpoint)
        model = build_imdlbenco(args.name, size=args.size)
        load_imdlbenco_checkpoint(model, state, source=str(args.checkpoint))
        path = save_localizer(model, args.out, source=str(args.checkpoint))
    except AnsmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({model.name}, {sum(p.numel() for p in model.parameters()):,} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
