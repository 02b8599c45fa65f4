"""Small helpers shared across the package: seeding, atomic writes, parsing user numbers, devices."""

from __future__ import annotations

import contextlib
import fractions
import json
import math
import os
import random
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ansm.errors import AnsmError, ConfigError, DataError, OutputError


# the checkout this package runs from (<checkout>/src/ansm/utils.py): ../shared beside it is our machines' layout
CHECKOUT = Path(__file__).resolve().parents[2]


def shared_locations(*parts: str) -> list[tuple[Path, str]]:
    """Where ``shared/<parts>`` (the real corpus, the test subset, official weights) may be, in lookup order, each
    with the name a report gives it (never the absolute path of the machine that ran it): ``$ANSM_SHARED/<parts>``,
    then ``../shared/<parts>`` beside the working directory, then beside the checkout. The one lookup behind every
    default data root and weights file; callers check which exists (a folder or a file)."""
    rel = "/".join(parts)
    found: list[tuple[Path, str]] = []
    if os.environ.get("ANSM_SHARED"):
        found.append((Path(os.environ["ANSM_SHARED"]).expanduser().joinpath(*parts), f"$ANSM_SHARED/{rel}"))
    for base in (Path.cwd().parent, CHECKOUT.parent):
        path = base.joinpath("shared", *parts)
        if all(path != p for p, _ in found):
            found.append((path, f"../shared/{rel}"))
    return found


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch from one integer (the CLI's ``--seed``)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**63:
        raise ConfigError(f"--seed must be an integer in [-2^63, 2^63) (PyTorch's range), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def seeded_generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded by a tuple of integers (e.g. ``(seed, step, rank)``): every random draw of a run is a
    function of where it happens, so a resumed or re-run job draws exactly the same numbers."""
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + int(p)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def run_environment(device: str | torch.device) -> dict[str, Any]:
    """What decides a training's floating-point result besides its seed and config: the torch version, the device
    and the CPU thread count. A CPU run is bitwise reproducible only with the same thread count, because the
    kernels split their sums by thread: one mobilenet-unet forward and backward on 1 and on 2 threads differ by
    ~4e-5 in the gradients, and 200 training steps of unet-small then end at held-out F1 0.325 against 0.368
    (``experiments/thread_drift.py``)."""
    return {"torch": torch.__version__, "device": str(device), "cpu_threads": torch.get_num_threads()}


def environments_so_far(saved: list[dict[str, Any]] | None, now: dict[str, Any]) -> list[dict[str, Any]]:
    """The environments a (possibly resumed) run has trained in, oldest first: ``now`` is appended when it differs
    from the last, so a summary shows that a resume changed, e.g., the thread count."""
    history = list(saved or [])
    return history if history and history[-1] == now else [*history, now]


def parse_eps(value: float | str) -> float:
    """Parse a budget written as a float or a fraction such as ``"8/255"`` (the usual way to write it)."""
    if isinstance(value, (int, float)):
        out = float(value)
    else:
        text = str(value).strip()
        try:
            out = float(fractions.Fraction(text)) if "/" in text else float(text)
        except (ValueError, ZeroDivisionError) as exc:
            raise ConfigError(f"cannot read budget {value!r}: write a number such as 0.03 or 8/255") from exc
    if not np.isfinite(out) or out < 0:
        raise ConfigError(f"budget must be a finite number >= 0, got {value!r}")
    return out


def mixed_precision(amp: bool | None, device: torch.device) -> tuple[bool, torch.amp.GradScaler]:
    """The trainers' mixed precision: (on?, gradient scaler). ``None`` turns fp16 autocast on for CUDA and off
    elsewhere; asking for it on a CPU is a :class:`ConfigError` (CPU fp16 autocast exists, but is slow and not what
    a user asking for ``--amp`` expects). The scaler is a pass-through when off, so one training loop serves both."""
    on = amp if amp is not None else device.type == "cuda"
    if on and device.type != "cuda":
        raise ConfigError("amp (fp16 autocast) needs a CUDA device; leave it off on a CPU")
    return on, torch.amp.GradScaler("cuda", enabled=on)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"--device: unknown device {device!r} (cpu, cuda, cuda:1 or auto)") from exc
    # Checked here, not at the first .to(dev), so the user gets one line instead of a CUDA traceback.
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine; use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                              f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {device}: MPS is not available on this machine; use --device cpu or auto")
    return dev


_UMASK_LOCK = threading.Lock()


def _file_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 less the umask): mkstemp's 0o600 is for secrets, and an
    output that only its owner can read surprises whoever shares the results folder."""
    with _UMASK_LOCK:  # reading the umask means setting it; the lock keeps threads from seeing 0 meanwhile
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A process killed mid-write leaves at most a hidden ``.tmp`` file, never a truncated output,
    which is what makes resumable jobs safe ("the file exists" means "the file is complete").
    The file gets the mode the umask allows, as any ``open()`` would. Failing to write (a folder at ``path``,
    a file where a folder should be, a read-only folder, a full disk) is one :class:`OutputError` naming the path.
    """
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{target}: is a folder, expected a file path to write")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"{target.parent}: cannot create this folder, a file is in the way "
                          "(choose another output path)") from None
    except OSError as exc:
        raise OutputError(f"{target.parent}: cannot create this folder ({exc.strerror or exc})") from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"{target.parent}: cannot write here ({exc.strerror or exc})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            # after the block: some writers (safetensors) replace the file rather than write into it
            os.chmod(tmp_path, _file_mode())
            os.replace(tmp_path, target)
        except OSError as exc:
            # only errors about this very file are ours to rename; any other path is reported as raised
            if exc.filename not in (None, str(tmp_path), str(target)):
                raise
            raise OutputError(f"{target}: cannot write ({exc.strerror or exc})") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf, also NumPy's) replaced by ``None``, NumPy scalars and arrays
    made plain: Python writes NaN as a bare ``NaN`` token that strict JSON readers (browsers, jq, most languages)
    reject, and "no value" is what a NaN metric means (e.g. image AUC over forged images only)."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict_json(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that always writes valid JSON: non-finite numbers become ``null`` (see :func:`strict_json`)."""
    return json.dumps(strict_json(obj), allow_nan=False, **kwargs)


def read_json(path: str | os.PathLike, error: type[AnsmError] = DataError, what: str = "JSON file") -> Any:
    """Parse a JSON file the user handed us; unreadable, non-UTF-8 or malformed is one ``error`` naming it."""
    p = Path(path)
    try:
        return json.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{p}: {what} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise error(f"{p}: {what} is not valid JSON ({exc})") from None
    except OSError as exc:
        raise error(f"{p}: cannot read {what} ({exc.strerror or exc})") from None


def read_jsonl(path: str | os.PathLike, error: type[AnsmError] = DataError,
               what: str = "JSON-lines file") -> list[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of a JSON-lines file; a bad line is one ``error``
    naming the file and the line."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{p}: {what} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise error(f"{p}: cannot read {what} ({exc.strerror or exc})") from None
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append((i, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise error(f"{p}:{i}: {what} line is not valid JSON ({exc})") from None
    return rows


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, strict JSON (no bare NaN: see :func:`dumps_json`), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(dumps_json(obj, indent=2, sort_keys=False) + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
