"""Put the shipped models into MODELS_DIR: ``python -m playbach.seed [--owner UID:GID]``.

The images carry the shipped models (SHIPPED_DIR); a deployment keeps its models on a volume
that starts empty and that the trainer publishes into. This step, run before the services
(compose's ``models`` service, Kubernetes' init container), copies each shipped model the
volume lacks, whole and by rename like a publication, and never replaces one that is there
(it may be retrained). With --owner (run as root), the volume is handed to the user the
trainer runs as, so it can publish."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from playbach.modeldir import ModelError, list_models, publish, staging_dir

SHIPPED_DIR = Path(os.environ.get("SHIPPED_MODELS_DIR", "/opt/playbach/models"))


def seed(shipped: Path, models_dir: Path) -> list[str]:
    """Copy the shipped models missing from models_dir; the names copied."""
    models_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in list_models(shipped):
        target = models_dir / name
        if target.exists():
            continue
        staging = staging_dir(models_dir, name)
        shutil.copytree(shipped / name, staging, dirs_exist_ok=True)
        if target.exists():  # another replica's init step was quicker
            shutil.rmtree(staging)
            continue
        try:
            publish(staging, target)
        except OSError:  # the same race, at the rename
            shutil.rmtree(staging, ignore_errors=True)
            continue
        copied.append(name)
    return copied


def hand_over(models_dir: Path, owner: str) -> None:
    uid, _, gid = owner.partition(":")
    for path in (models_dir, *models_dir.rglob("*")):
        os.chown(path, int(uid), int(gid or uid), follow_symlinks=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m playbach.seed", description=__doc__.split("\n")[0])
    p.add_argument("--shipped", type=Path, default=SHIPPED_DIR)
    p.add_argument("--models-dir", type=Path, default=Path(os.environ.get("MODELS_DIR", "")))
    p.add_argument("--owner", help="UID[:GID] to own the models folder (needs root)")
    args = p.parse_args(argv)
    try:
        if not str(args.models_dir) or str(args.models_dir) == ".":
            raise ValueError("set MODELS_DIR or --models-dir")
        if args.owner and not all(part.isdigit() for part in args.owner.split(":")):
            raise ValueError(f"--owner {args.owner!r}: expected UID or UID:GID, as numbers")
        if not list_models(args.shipped):
            raise ValueError(f"no models in {args.shipped}")
        copied = seed(args.shipped, args.models_dir)
        if args.owner:
            hand_over(args.models_dir, args.owner)
    except (ValueError, OSError, ModelError) as exc:
        print(f"seed: {exc}", file=sys.stderr)
        return 2
    kept = sorted(set(list_models(args.models_dir)) - set(copied))
    print(f"seed: {args.models_dir}: copied {', '.join(copied) or 'nothing'}; "
          f"kept {', '.join(kept) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
