"""The device's own ceiling for concurrent fdatasyncs, without enforcelog.

For N in 1, 2, 4, 8 processes, each appends 200 bytes to its own file and
calls fdatasync, back to back, for 3 s; prints the total fdatasyncs/s.
`grow` appends to a growing file (as a segment grew before
`LogOptions::preallocate_segments`); `zero` overwrites a file zero-filled
and synced beforehand (64 MiB, wrapping at its end: no size change to
journal, as in a filled segment), the ceiling the durable bench's
`raw-prezeroed` measures. Prints zero/grow per process count at the end.

    python3 benches/raw_fsync_processes.py [DIR]

DIR must be on the disk under test (default: target/raw-fsync; /tmp may be
a tmpfs where syncs cost nothing). Compared with `cargo bench --bench
shards` in docs/DESIGN.md ("Many processes, one directory: shards").
"""

import multiprocessing
import os
import sys
import time

SECONDS = 3
RECORD = b"x" * 200
ZEROED = 64 << 20


def worker(path, mode, results):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if mode == "zero":
            os.write(fd, b"\0" * ZEROED)
            os.fsync(fd)
        position = 0
        syncs = 0
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            if mode == "zero" and position + len(RECORD) > ZEROED:
                position = 0
            os.pwrite(fd, RECORD, position)
            position += len(RECORD)
            os.fdatasync(fd)
            syncs += 1
        results.put(syncs)
    finally:
        os.close(fd)
        os.unlink(path)


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "raw-fsync")
    os.makedirs(directory, exist_ok=True)
    rates = {}
    for mode in ("grow", "zero"):
        for processes in (1, 2, 4, 8):
            results = multiprocessing.Queue()
            workers = [
                multiprocessing.Process(
                    target=worker, args=(os.path.join(directory, f"f{i}"), mode, results)
                )
                for i in range(processes)
            ]
            for w in workers:
                w.start()
            total = sum(results.get() for _ in workers)
            for w in workers:
                w.join()
            rates[(mode, processes)] = total / SECONDS
            print(f"{mode}: {processes} processes, {total / SECONDS:,.0f} fdatasyncs/s", flush=True)
    for processes in (1, 2, 4, 8):
        ratio = rates[("zero", processes)] / max(rates[("grow", processes)], 1e-9)
        print(f"zero/grow: {processes} processes, {ratio:.2f}x", flush=True)


if __name__ == "__main__":
    main()
