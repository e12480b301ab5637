"""`make test`'s pytest: two sessions at once, so the suite takes about the longer of the two
instead of their sum.

- The tests with no real-time timing in them run at low priority (``nice``), in the
  background, their report printed at the end: the trainer's (they train real tiny models:
  CPU-bound), and the gateway's, the control room's, the synth's, the manifests' and the
  settings' own (units, the fuzzer, AppTest, kubernetes-validate, services refusing a bad
  setting).
- Everything else (live services, browsers) mostly waits on real time: audio plays at its
  own pace. It runs at normal priority, so its timing is measured on a machine that is busy
  but gives it the CPU first (the kernel weighs nice 0 about ten times nice 10). So do the
  shared package's tests, some of which time a worker's wake-up.

Arguments are passed to both sessions (``make test ARGS="-x"``). Exit status: the first
non-zero of the two."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BACKGROUND = ["tests/trainer", "tests/gateway", "tests/ui", "tests/synth", "tests/deploy",
              "tests/test_service_settings.py"]
NICE = 10


def pytest(paths: list[str], extra: list[str], basetemp: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", f"--basetemp={basetemp}", *more, *extra,
            *paths]


def main(extra: list[str]) -> int:
    temp = Path(tempfile.mkdtemp(prefix="playbach-tests-"))
    started = time.monotonic()
    with (temp / "background.log").open("w+") as log:
        background = subprocess.Popen(
            pytest(BACKGROUND, extra, temp / "background", "--durations=8",
                   "-p", "no:cacheprovider"),
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.nice(NICE))
        ignore = [f"--ignore={p}" for p in BACKGROUND]
        print(f"{' '.join(BACKGROUND)}: in the background at nice {NICE}; the rest here",
              flush=True)
        try:
            front = subprocess.call(pytest(["tests"], extra, temp / "front", "--durations=12",
                                           *ignore), cwd=REPO)
            front_s = time.monotonic() - started
            back = background.wait()
        except KeyboardInterrupt:
            background.terminate()
            background.wait()
            raise
        log.seek(0)
        print(f"\n===== {' '.join(BACKGROUND)} (nice {NICE}) =====", flush=True)
        sys.stdout.write(log.read())
    print(f"\nboth sessions: {time.monotonic() - started:.0f} s (the rest alone "
          f"{front_s:.0f} s); exit {front} and {back}")
    if front or back:
        print(f"their files are kept in {temp}")
    else:
        shutil.rmtree(temp, ignore_errors=True)
    return front or back


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
