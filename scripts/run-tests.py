#!/usr/bin/env python3
"""Builds every test target once with cargo, then runs the test binaries two at a time.

The benches are built (they must compile and pass the lints) but not run: `cargo bench` does.

`cargo test` runs its test binaries one after another; much of their time goes to waiting on
processes, fsyncs and timeouts, so two at a time on two cores cuts the wall time (measured here:
the suite took 8.4 minutes one binary at a time, 5.1 two at a time, each binary a little slower). Each binary runs as cargo would run it (in its package's directory), its output
printed whole once it ends. Arguments before `--` go to `cargo test --no-run`, those after to
every test binary (a filter, `--nocapture`). Exit status: non-zero if any binary failed.
"""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

# Two lanes: the machine these tests are written for has two cores.
LANES = int(os.environ.get("MEDCHAIN_TEST_LANES", "2"))

# The binaries that took a minute or so in CI (each prints its time), longest first.
LONGEST = [
    "sim test seeds",
    "ledger test tamper",
    "node lib node",
    "medchain test byzantine",
    "medchain test serve_crash",
    "medchain test browser",
    "medchain test network",
    "medchain test bench",
]


def build(cargo_args):
    """The test executables cargo built, as (package directory, name, path)."""
    cmd = ["cargo", "test", "--no-run", "--message-format=json-render-diagnostics", *cargo_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    binaries = []
    for line in proc.stdout:
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg["profile"]["test"]:
            continue  # a binary the tests start, not a test
        target = msg["target"]
        if target["kind"] == ["bench"]:
            continue  # built, so linted and kept compiling; `cargo bench` runs them
        package_dir = os.path.dirname(msg["manifest_path"])
        name = f"{os.path.basename(package_dir)} {target['kind'][0]} {target['name']}"
        binaries.append((package_dir, name, msg["executable"]))
    if proc.wait() != 0:
        sys.exit(proc.returncode)
    return binaries


def rank(name):
    """Where a binary starts: the longest first, in `LONGEST`'s order, then cargo's."""
    return LONGEST.index(name) if name in LONGEST else len(LONGEST)


def run(binary, test_args):
    package_dir, name, path = binary
    started = time.monotonic()
    done = subprocess.run(
        [path, *test_args], cwd=package_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    return name, done.returncode, done.stdout.decode(errors="replace"), time.monotonic() - started


def main():
    args = sys.argv[1:]
    split = args.index("--") if "--" in args else len(args)
    cargo_args, test_args = args[:split], args[split + 1 :]
    # The longest first: a lane that starts one last leaves the other idle (about 30 s).
    binaries = sorted(build(cargo_args), key=lambda binary: rank(binary[1]))
    started = time.monotonic()
    failed = []
    with ThreadPoolExecutor(max_workers=LANES) as lanes:
        for name, status, output, seconds in lanes.map(lambda b: run(b, test_args), binaries):
            print(f"\n===== {name} ({seconds:.1f} s) =====\n{output}", end="", flush=True)
            if status != 0:
                failed.append((name, output))
    # The failures again, last, where a reader of a cut log (CI's tail) finds them.
    for name, output in failed:
        print(f"\n===== failed: {name} =====\n{failures_of(output)}", end="")
    print(f"\n{len(binaries)} test binaries in {time.monotonic() - started:.0f} s, {LANES} at a time")
    if failed:
        print("FAILED: " + ", ".join(name for name, _ in failed))
        sys.exit(1)


def failures_of(output):
    """The libtest report of what failed (from its first "failures:"), else the last lines."""
    at = output.find("\nfailures:\n")
    report = output[at:] if at >= 0 else "\n".join(output.splitlines()[-200:]) + "\n"
    # The panics, each with the lines that follow it, after everything a test printed later
    # (the process tests print their nodes' logs while unwinding).
    lines = output.splitlines()
    panics = [
        "\n".join(lines[i : i + 4]) for i, line in enumerate(lines) if " panicked at " in line
    ]
    return report + "".join(f"\n{panic}\n" for panic in panics)


if __name__ == "__main__":
    main()
