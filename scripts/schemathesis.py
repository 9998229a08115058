#!/usr/bin/env python3
"""Runs schemathesis against a live `medchain serve` (issue 12, "a contract machines can read").

Starts `medchain serve --demo` on a free loopback port with a temporary data directory, signs in
as the demo doctor and the demo patient, gives the run something to find (a record, grants, a
pending request), and runs `schemathesis run` against /api/openapi.json with each session's
cookie: every answer must be no 5xx, a status the document lists, with the content type, headers
and schema it gives, and a method a path does not serve 405 with `Allow`. Then the server must
still serve (/healthz and a signed-in call), and it is stopped. The whole schemathesis part is
bounded by BUDGET_S; generation is deterministic, with one worker and a bounded number of cases
per operation, so that a run repeats the last.

Usage: schemathesis.py MEDCHAIN_BINARY SCHEMATHESIS_BINARY
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

# The whole schemathesis part (issue 12: "schemathesis (2 minutes at most)").
BUDGET_S = 120
# Cases per operation in the fuzzing phase; the examples and coverage phases add their own. 150
# took 85-113 s of the budget on a quiet machine, over it on a busy one.
MAX_EXAMPLES = 100
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        # A method a path does not serve is 405 with `Allow`.
        "unsupported_method",
        "allow_header_conformance",
    ]
)
# What only a doctor may do: the patient's run leaves it out (403 before its handler).
DOCTOR_PATHS = (
    r"^/api/(request_consent|consents/request|consents/requested|validate|add_record"
    r"|doctor/patient_records)$"
)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port, method, path, body=None, cookie=None, timeout=15):
    """(status, headers, parsed JSON body) of one request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if cookie:
        headers["Cookie"] = cookie
    try:
        conn.request(method, path, body=data, headers=headers)
        res = conn.getresponse()
        raw = res.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        headers = dict(res.getheaders())
        # Every Set-Cookie (the session's and the device's), which a dict keeps one of.
        headers["set-cookies"] = res.headers.get_all("Set-Cookie") or []
        return res.status, headers, parsed
    finally:
        conn.close()


def wait_healthy(port, server, deadline_s):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if server.poll() is not None:
            raise SystemExit(f"medchain serve exited with {server.returncode} before serving")
        try:
            status, _, _ = call(port, "GET", "/healthz", timeout=2)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"medchain serve did not answer /healthz within {deadline_s} s")


def login(port, role, login_id, password, deadline_s=60):
    """The session cookie of a demo login; retried while the enrollment is not on chain (503)."""
    field = "doctorId" if role == "doctor" else "patientId"
    end = time.monotonic() + deadline_s
    while True:
        status, headers, body = call(
            port, "POST", "/api/login", {"role": role, field: login_id, "password": password}
        )
        if status == 200:
            cookies = headers["set-cookies"]
            if not cookies:
                raise SystemExit(f"login of {login_id} set no cookie: {headers}")
            # As a browser sends them back: the session cookie and the device cookie.
            return "; ".join(c.split(";", 1)[0] for c in cookies)
        if status != 503 or time.monotonic() > end:
            raise SystemExit(f"login of {login_id}: {status} {body}")
        time.sleep(0.5)


def seed(port, doctor, patient):
    """Data for the run to find: a used write grant and its record, a read grant, a pending
    request, a read. Returns the ids the run's path parameters take (schemathesis cannot guess
    a 64-hex id that exists)."""

    def ok(status, body, what):
        if status != 200:
            raise SystemExit(f"seeding, {what}: {status} {body}")
        return body

    in_person = {"patientId": "p001", "password": "patient123"}
    write = ok(*call(port, "POST", "/api/request_consent", in_person, doctor)[::2], "write grant")
    record = ok(
        *call(
            port,
            "POST",
            "/api/add_record",
            {
                "patientId": "p001",
                "otp": write["otp"],
                "medical_data": {"diagnosis": "Angina", "prescription": "Rest", "notes": "seeded"},
            },
            doctor,
        )[::2],
        "record",
    )
    read = ok(
        *call(
            port,
            "POST",
            "/api/request_consent",
            {**in_person, "scope": {"read": {"durationMs": 3_600_000}}},
            doctor,
        )[::2],
        "read grant",
    )
    request = ok(
        *call(
            port,
            "POST",
            "/api/consents/request",
            {"patientId": "p001", "purpose": "Follow-up"},
            doctor,
        )[::2],
        "request",
    )
    # The record and the request are committed before the run reads them.
    end = time.monotonic() + 30
    for tx in (record["txId"], request["consent"]["id"]):
        while True:
            _, _, body = call(port, "GET", f"/api/tx/{tx}", cookie=doctor)
            if body.get("status") == "committed":
                break
            if time.monotonic() > end:
                raise SystemExit(f"seeding: {tx} not committed: {body}")
            time.sleep(0.2)
    ok(*call(port, "POST", "/api/patient_records", {}, patient)[::2], "read")
    return {
        "record": record["txId"],
        "write": write["consentId"],
        "read": read["consentId"],
        "request": request["consent"]["id"],
    }


def config(path, cookie, ids):
    """A schemathesis.toml: the session cookie, and, for the operations that take an id, one that
    exists (else every case is a 404 before the handler's own answers)."""
    by_path = {
        "/api/tx/{id}": ids["record"],
        "/api/consents/{id}": ids["read"],
        "/api/consents/{id}/approve": ids["request"],
        "/api/consents/{id}/deny": ids["request"],
        "/api/grants/{id}/revoke": ids["write"],
        "/api/records/{id}/erasure": ids["record"],
    }
    lines = [f"headers = {{ Cookie = {json.dumps(cookie)} }}", ""]
    for route, value in by_path.items():
        lines += [
            "[[operations]]",
            f"include-path = {json.dumps(route)}",
            f'parameters = {{ "path.id" = {json.dumps(value)} }}',
            "",
        ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def schemathesis(binary, port, config_path, filters, seconds_left, report_dir, name):
    cmd = [
        binary,
        "--config-file",
        config_path,
        "run",
        f"http://127.0.0.1:{port}/api/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        # No randomness and no example database: a run repeats the last one.
        "--generation-deterministic",
        # The session from the config file, never one generated from the document's schemes.
        "--generation-with-security-parameters",
        "false",
        # One worker: the order of the requests, and so the state each one meets, repeats.
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--continue-on-failure",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        os.path.join(report_dir, f"{name}.xml"),
        *filters,
    ]
    print(f"schemathesis ({name}): {' '.join(cmd[1:])}", flush=True)
    started = time.monotonic()
    try:
        # In the run's folder: schemathesis keeps state (`.schemathesis/`) in its working directory.
        done = subprocess.run(cmd, timeout=max(seconds_left, 1), cwd=report_dir)
    except subprocess.TimeoutExpired:
        raise SystemExit(
            f"schemathesis ({name}) went over the {BUDGET_S} s budget: lower MAX_EXAMPLES"
        )
    print(f"schemathesis ({name}): {time.monotonic() - started:.1f} s", flush=True)
    return done.returncode


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    # Absolute: schemathesis runs in the run's folder.
    medchain, st = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    work = tempfile.mkdtemp(prefix="medchain-schemathesis-")
    port = free_port()
    log_path = os.path.join(work, "serve.log")
    log = open(log_path, "w")
    server = subprocess.Popen(
        [
            medchain,
            "serve",
            "--demo",
            "--data-dir",
            os.path.join(work, "data"),
            "--addr",
            f"127.0.0.1:{port}",
            # Steps that wait for their block (a consent, an erasure request) answer quickly.
            "--batch-window",
            "200ms",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
    )
    failed = []
    try:
        wait_healthy(port, server, 60)
        doctor = login(port, "doctor", "d001", "doctor123")
        patient = login(port, "patient", "p001", "patient123")
        ids = seed(port, doctor, patient)
        started = time.monotonic()
        left = lambda: BUDGET_S - (time.monotonic() - started)  # noqa: E731
        # Logout would end the session the rest of the run uses: it runs last, alone.
        runs = [
            ("doctor", doctor, ["--exclude-path", "/api/logout"]),
            (
                "patient",
                patient,
                ["--exclude-path", "/api/logout", "--exclude-path-regex", DOCTOR_PATHS],
            ),
            ("logout", patient, ["--include-path", "/api/logout"]),
        ]
        for name, cookie, filters in runs:
            config_path = os.path.join(work, f"{name}.toml")
            config(config_path, cookie, ids)
            if schemathesis(st, port, config_path, filters, left(), work, name) != 0:
                failed.append(name)
        print(f"schemathesis: {time.monotonic() - started:.1f} s in all", flush=True)

        # The server survived it and still serves, a signed-in call included.
        if server.poll() is not None:
            raise SystemExit(f"medchain serve died during the run ({server.returncode})")
        status, _, body = call(port, "GET", "/healthz")
        if status != 200 or body.get("status") != "ok":
            raise SystemExit(f"/healthz after the run: {status} {body}")
        # The doctor's session (a new login of d001 is refused a while: the run sent it wrong
        # passwords).
        status, _, body = call(port, "GET", "/api/status", cookie=doctor)
        if status != 200:
            raise SystemExit(f"/api/status after the run: {status} {body}")
        print(f"medchain still serves: height {body.get('height')}", flush=True)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        log.close()
        if failed or server.returncode not in (0, None):
            print(f"--- medchain serve log ({log_path}), last lines:")
            with open(log_path) as f:
                print("".join(f.readlines()[-40:]))
    if server.returncode != 0:
        raise SystemExit(f"medchain serve exited with {server.returncode} on SIGTERM")
    if failed:
        raise SystemExit(f"schemathesis found failures ({', '.join(failed)}); reports in {work}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
