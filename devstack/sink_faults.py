"""Switch the SMTP sink's failure injection on and off, while it runs.

    python -m devstack.sink_faults --transient 0.2            # 20% of RCPTs get 451 4.3.0
    python -m devstack.sink_faults --permanent 0.05 --seed 1  # 5% get 550 5.1.1, reproducibly
    python -m devstack.sink_faults --fail bad@example.com=550 --fail slow@example.com=451:2
    python -m devstack.sink_faults --show
    python -m devstack.sink_faults --clear

From Python (tests)::

    from devstack.sink_faults import set_faults, clear_faults
    set_faults(transient_rate=0.2, seed=1)
    set_faults(fail_recipients={"x@example.com": 550, "y@example.com": {"code": 451, "times": 2}})
    clear_faults()

The file is $SANDESH_SMTP_SINK_FAULTS, else the one named in run/stack.env,
else run/smtp-sink/faults.json. `"times": N` fails that recipient's first N
attempts and then accepts it; a random transient failure is drawn anew on
every attempt, so a retry can succeed.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from devstack import config
from devstack.env import StackEnvMissing, load_stack_env


def faults_path() -> Path:
    if os.environ.get("SANDESH_SMTP_SINK_FAULTS"):
        return Path(os.environ["SANDESH_SMTP_SINK_FAULTS"])
    try:
        return Path(load_stack_env()["SANDESH_SMTP_SINK_FAULTS"])
    except (StackEnvMissing, KeyError):
        return config.RUN_DIR / "smtp-sink" / "faults.json"


def set_faults(transient_rate: float = 0.0, permanent_rate: float = 0.0,
               fail_recipients: dict | None = None, seed: int | None = None,
               path: Path | None = None) -> Path:
    """Replace the sink's faults (atomically: the sink never reads half a file)."""
    from devstack.smtp_sink import FaultConfig

    spec = {"transient_rate": transient_rate, "permanent_rate": permanent_rate,
            "fail_recipients": fail_recipients or {}}
    if seed is not None:
        spec["seed"] = seed
    FaultConfig.from_json(spec)  # refuse what the sink would ignore
    target = Path(path or faults_path())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(spec, indent=2) + "\n")
    os.replace(tmp, target)
    return target


def clear_faults(path: Path | None = None) -> Path:
    target = Path(path or faults_path())
    target.unlink(missing_ok=True)
    return target


def _recipient(text: str) -> tuple[str, object]:
    address, sep, spec = text.rpartition("=")
    if not sep or not address:
        raise argparse.ArgumentTypeError(f"{text!r}: use ADDRESS=CODE or ADDRESS=CODE:TIMES")
    code, _, times = spec.partition(":")
    try:
        return address, ({"code": int(code), "times": int(times)} if times else int(code))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: CODE and TIMES must be numbers") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.sink_faults",
                                     description="Inject SMTP failures into the local sink.")
    parser.add_argument("--transient", type=float, default=0.0, metavar="RATE",
                        help="share of RCPTs answered 451 4.3.0 (0..1)")
    parser.add_argument("--permanent", type=float, default=0.0, metavar="RATE",
                        help="share of RCPTs answered 550 5.1.1 (0..1)")
    parser.add_argument("--fail", type=_recipient, action="append", default=[],
                        metavar="ADDRESS=CODE[:TIMES]",
                        help="always (or the first TIMES attempts) answer this recipient with CODE")
    parser.add_argument("--seed", type=int, help="seed the random draws (reproducible runs)")
    parser.add_argument("--clear", action="store_true", help="remove all faults")
    parser.add_argument("--show", action="store_true", help="print the current faults")
    args = parser.parse_args(argv)

    path = faults_path()
    if args.show:
        print(path.read_text().strip() if path.exists() else f"no faults ({path} does not exist)")
        return
    if args.clear:
        clear_faults(path)
        print(f"SMTP sink faults cleared ({path} removed)")
        return
    try:
        set_faults(args.transient, args.permanent, dict(args.fail), args.seed, path)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"SMTP sink faults written to {path}:\n{path.read_text().strip()}")


if __name__ == "__main__":
    main()
