"""Atomic writes and safe loads for every file rpbench keeps.

Under torch.distributed (`torchrun ... --ddp`) every rank runs the same cell in lockstep and would write the
same files: only rank 0 writes (`main_process`), and the runner puts a barrier where the others read next.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from benchmark.core.errors import UserError


def main_process() -> bool:
    """True unless this process is a rank other than 0 of a torch.distributed job."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _atomic(path: Path, write: Any) -> None:
    if not main_process():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    _atomic(Path(path), lambda tmp: torch.save(obj, tmp))


def atomic_write_bytes(data: bytes, path: Path) -> None:
    _atomic(Path(path), lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(text: str, path: Path) -> None:
    atomic_write_bytes(text.encode("utf-8"), path)


def atomic_write_json(obj: Any, path: Path) -> None:
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def safe_load(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint with weights_only=True (pickles execute code); a broken file is a UserError."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint not found: {path}") from None
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load checkpoint {path}: {first}") from None
