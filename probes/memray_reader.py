"""The child process behind ``probes.memray.read_capture``: reads one memray capture and
writes the compact ``MemrayCapture`` (pickled) to stdout; a bad capture is one line on
stderr and exit code 2. Run as ``python -m probes.memray_reader PATH PID MIN_PEAK``;
``--finalized PATH`` only says whether the target has finished the capture (exit 0) or not
(exit 1)."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

from probes.memray import CaptureError, capture_finalized_here, read_capture_here


def main(argv: list[str]) -> int:
    if argv[:1] == ["--finalized"]:
        return 0 if capture_finalized_here(Path(argv[1])) else 1
    path, pid, min_peak = Path(argv[0]), int(argv[1]), int(argv[2])
    try:
        capture = read_capture_here(path, pid, min_peak)
    except CaptureError as exc:
        print(f"CaptureError: {exc}", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(pickle.dumps(capture, protocol=pickle.HIGHEST_PROTOCOL))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
