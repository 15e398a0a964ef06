"""Idle cost: CPU time and wake-ups of the tracker's threads while sessions just run.

Run: ``.venv/bin/python benchmarks/idle_cpu.py`` (``--seconds N``, default 180: a
running session's windows are held up to 52.5 s, so a minute may see no send).

Each setup runs in a process of its own, all side by side for ``--seconds``,
with the main thread asleep:

* heartbeat interval 15 s (the default) with a spool: one running session,
  twenty, and none (a session was started and ended before the measurement,
  so both threads exist and rest: an app between two lessons);
* 15 s without a spool, one session;
* 15 s with the spool on a memory file system (``/dev/shm``), one session:
  the wake-ups the design itself makes, without the disk's (``fdatasync``
  sleeps in the kernel while the disk writes and flushes);
* 1 s, with and without a spool, one session (a window a second, for scale).

For each of the tracker's two threads (``timeback-tracker-heartbeat`` and
``-delivery``) the script reads, at the start and at the end, the thread's
own CPU clock (``time.pthread_getcpuclockid``) and its voluntary context
switches (``/proc/self/task/<tid>/status``): a thread switches voluntarily
each time it goes to sleep, so the count is its wake-ups. It also reads the
whole process's CPU time (``getrusage``; the sleeping main thread included).

Two floors run beside them: a Python thread that only waits a second and
writes an 8-byte stamp, and, where a C compiler is found, the same loop in C
(``pthread_cond_timedwait`` and ``pwrite``): what one wake-up a second costs
on this machine before any Python runs.

``requests`` and ``tenacity`` are imported by the main thread beforehand:
that one-off cost (printed) otherwise lands on the delivery thread at its
first send. One ``LocalCollector``, in a child process, receives from all of
them. Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _bench

import timeback_tracker as tt

# Where a setup's spool lives: a temporary directory (on disk), a memory file system, none.
DISK, MEMORY_FS, NO_SPOOL = "disk", "tmpfs", "no"
SHM = Path("/dev/shm")

# (interval in seconds, spool, running sessions); 0 sessions: one started and ended before;
# -1: one session left alone past its inactive cutoff (an idle kiosk: nothing is counted).
SETUPS = [
    (15.0, DISK, 1),
    (15.0, DISK, 20),
    (15.0, DISK, 0),
    (15.0, DISK, -1),
    (15.0, NO_SPOOL, 1),
    (15.0, MEMORY_FS, 1),
    (1.0, DISK, 1),
    (1.0, NO_SPOOL, 1),
]

# The floor in C: one thread waits a second on a condition and pwrites a stamp, in a
# loop; prints its CPU time (ns) and voluntary context switches as JSON.
C_FLOOR = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    double seconds = atof(argv[1]);
    int fd = open(argv[2], O_RDWR | O_CREAT, 0600);
    pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
    pthread_condattr_t attr;
    pthread_cond_t cond;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&cond, &attr);
    struct timespec began, now, deadline, cpu;
    struct rusage usage;
    clock_gettime(CLOCK_MONOTONIC, &began);
    getrusage(RUSAGE_THREAD, &usage);
    long switches = usage.ru_nvcsw;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);
    long long cpu_ns = cpu.tv_sec * 1000000000LL + cpu.tv_nsec;
    do {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += 1;
        pthread_mutex_lock(&mutex);
        pthread_cond_timedwait(&cond, &mutex, &deadline);
        pthread_mutex_unlock(&mutex);
        long long stamp = deadline.tv_sec;
        if (pwrite(fd, &stamp, sizeof stamp, 0) != sizeof stamp) return 1;
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((now.tv_sec - began.tv_sec) + (now.tv_nsec - began.tv_nsec) / 1e9 < seconds);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);
    getrusage(RUSAGE_THREAD, &usage);
    printf("{\"elapsed\": %f, \"threads\": {\"floor\": [%lld, %ld]}}\n",
           (now.tv_sec - began.tv_sec) + (now.tv_nsec - began.tv_nsec) / 1e9,
           cpu.tv_sec * 1000000000LL + cpu.tv_nsec - cpu_ns, usage.ru_nvcsw - switches);
    return 0;
}
"""


def cpu_ns(thread: threading.Thread) -> int:
    """CPU time ``thread`` has used so far, nanoseconds."""
    assert thread.ident is not None
    return time.clock_gettime_ns(time.pthread_getcpuclockid(thread.ident))


def wakeups(thread: threading.Thread) -> int:
    """Voluntary context switches of ``thread`` so far (Linux)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    for line in status.splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    return 0


def threads_of(tracker: tt.Tracker) -> dict[str, threading.Thread]:
    """The tracker's running threads by role."""
    found = {"heartbeat": tracker._heartbeat._thread, "delivery": tracker._delivery._thread}
    return {role: thread for role, thread in found.items() if thread is not None}


def sample(tracker: tt.Tracker) -> dict[str, tuple[int, int]]:
    """(CPU ns, wake-ups) of each of the tracker's threads now."""
    return {role: (cpu_ns(t), wakeups(t)) for role, t in threads_of(tracker).items()}


def child(url: str, interval: float, where: str, sessions: int, seconds: float) -> None:
    """One setup in this process: measure, print one JSON line."""
    before = time.process_time()
    import tenacity  # noqa: F401 - imported here so the delivery thread does not pay it

    import timeback_tracker._transport  # noqa: F401 - imports requests

    imports = time.process_time() - before
    dormant = sessions < 0
    with tempfile.TemporaryDirectory(dir=SHM if where == MEMORY_FS else None) as name:
        spool = None if where == NO_SPOOL else Path(name) / "idle.sqlite3"
        cutoffs = {"idle_timeout": 1, "inactive_cutoff": 1} if dormant else {}
        tracker = tt.Tracker(
            _bench.config(url, heartbeat_interval=interval, spool_path=spool, **cutoffs)
        )
        started = [
            tracker.start_session(_bench.USER, _bench.ACTIVITY) for _ in range(abs(sessions))
        ]
        if not sessions:  # both threads started, then nothing to do
            tracker.start_session(_bench.USER, _bench.ACTIVITY).end()
        tracker.flush(5)
        # Past the start: the threads in their steady rhythm (the idle kiosk's run past
        # its cutoff once the first tick has seen it).
        time.sleep(interval + 1.5 if dormant else 1.5)
        first = sample(tracker)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        began = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - began
        last = sample(tracker)
        end = resource.getrusage(resource.RUSAGE_SELF)
        sent = tracker.stats().sent
        for session in started:
            session.end()
        tracker.close()
    process = end.ru_utime + end.ru_stime - usage.ru_utime - usage.ru_stime
    print(
        json.dumps(
            {
                "elapsed": elapsed,
                "imports": imports,
                "process": process,
                "sent": sent,
                "threads": {
                    role: [last[role][0] - first[role][0], last[role][1] - first[role][1]]
                    for role in last
                    if role in first
                },
            }
        )
    )


def floor(seconds: float) -> None:
    """Child: the least a once-a-second sign of life can cost in Python.

    A thread that waits one second on a condition and then writes an 8-byte
    stamp with ``os.pwrite``, nothing else: what any design that keeps a
    ``kill -9`` from losing more than a second pays before doing any work.
    Measured from inside the thread, the same two ways as the tracker's.
    """
    condition = threading.Condition()
    result: dict[str, Any] = {}
    with tempfile.TemporaryFile() as file:

        def stamp() -> None:
            me = threading.current_thread()
            cpu, woken, began = cpu_ns(me), wakeups(me), time.monotonic()
            while time.monotonic() < began + seconds:
                with condition:
                    condition.wait(1.0)
                os.pwrite(file.fileno(), time.monotonic_ns().to_bytes(8, "big"), 0)
            result["elapsed"] = time.monotonic() - began
            result["threads"] = {"floor": [cpu_ns(me) - cpu, wakeups(me) - woken]}

        thread = threading.Thread(target=stamp)
        thread.start()
        thread.join()
    print(json.dumps(result))


def start_floors(seconds: float, scratch: str) -> list[tuple[str, subprocess.Popen[str]]]:
    """Start the floors: the Python thread, and the same loop in C if a compiler is found."""
    floors = [
        (
            "a Python thread that waits 1 s and pwrites an 8-byte stamp, nothing else",
            subprocess.Popen(
                [sys.executable, __file__, "--floor", str(seconds)],
                stdout=subprocess.PIPE,
                text=True,
            ),
        )
    ]
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        print("floor in C: no C compiler found (cc, gcc, clang); not measured")
        return floors
    source, program = Path(scratch) / "floor.c", Path(scratch) / "floor"
    source.write_text(C_FLOOR)
    built = subprocess.run(
        [compiler, "-O2", "-o", str(program), str(source), "-lpthread"],
        check=False,
        capture_output=True,
        text=True,
    )
    if built.returncode:
        print(f"floor in C: {compiler} could not build it; not measured\n{built.stderr}")
        return floors
    floors.append(
        (
            "the same loop in C (pthread_cond_timedwait + pwrite)",
            subprocess.Popen(
                [str(program), str(seconds), str(Path(scratch) / "stamp")],
                stdout=subprocess.PIPE,
                text=True,
            ),
        )
    )
    return floors


def main() -> None:
    """Run every setup side by side and print each one's CPU time and wake-ups."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="how long (180)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--floor", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        floor(args.floor)
        return
    if args.child:
        url, interval, where, sessions, seconds = args.child
        child(url, float(interval), where, int(sessions), float(seconds))
        return
    print(_bench.machine())
    results: list[tuple[tuple[float, str, int], dict[str, Any]]] = []
    with contextlib.ExitStack() as stack:
        collector = stack.enter_context(_bench.remote_collector())
        processes = [
            (
                setup,
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        collector.url,
                        str(setup[0]),
                        setup[1],
                        str(setup[2]),
                        str(args.seconds),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                ),
            )
            for setup in SETUPS
            if setup[1] != MEMORY_FS or SHM.is_dir()
        ]
        floors = start_floors(args.seconds, stack.enter_context(tempfile.TemporaryDirectory()))
        for setup, process in processes:
            output, _ = process.communicate()
            results.append((setup, json.loads(output.strip().splitlines()[-1])))
    print(
        f"one-off: importing requests + tenacity (done at the first send) "
        f"{min(result['imports'] for _, result in results) * 1000:.0f} ms CPU"
    )
    print(f"over {args.seconds:.0f} s, each setup in its own process, side by side\n")
    print(
        f"{'interval':>8} {'spool':>5} {'sessions':>8} {'heartbeat CPU':>13} {'wake-ups':>8}"
        f" {'delivery CPU':>12} {'wake-ups':>8} {'sent':>5} {'wake-ups/min':>12}"
        f" {'threads, % core':>15} {'process, % core':>15}"
    )
    for (interval, where, sessions), result in results:
        cells = []
        total_cpu = total_wake = 0
        for role in ("heartbeat", "delivery"):
            if role not in result["threads"]:
                cells += ["-", "-"]
                continue
            cpu, wake = result["threads"][role]
            total_cpu += cpu
            total_wake += wake
            cells += [f"{cpu / 1e6:.1f} ms", str(wake)]
        elapsed = result["elapsed"]
        shown = "1 idle" if sessions < 0 else str(sessions)
        print(
            f"{interval:>7.0f}s {where:>5} {shown:>8} {cells[0]:>13}"
            f" {cells[1]:>8} {cells[2]:>12} {cells[3]:>8} {result['sent']:>5}"
            f" {total_wake * 60 / elapsed:>12.1f} {total_cpu / 1e9 / elapsed:>14.4%}"
            f" {result['process'] / elapsed:>14.4%}"
        )
    print()
    for name, process in floors:
        output, _ = process.communicate()
        measured = json.loads(output.strip().splitlines()[-1])
        cpu, wake = measured["threads"]["floor"]
        print(
            f"floor, {name}: {cpu / 1e6:.1f} ms CPU, "
            f"{wake * 60 / measured['elapsed']:.1f} wake-ups a minute, "
            f"{cpu / 1e9 / measured['elapsed']:.4%} of a core"
        )
    print(
        "\ntargets (issue 12, benchmarks/README.md), 15 s interval with the spool: "
        "<= 0.02 % of a core, "
        "<= 70 wake-ups a minute"
    )


if __name__ == "__main__":
    main()
