#!/usr/bin/env python3
# Usage: scripts/missing-keys.py DATA_DIR   (a `medchain bench` data directory of four validators)
# For each validator of a data dir: records and grants it is party to (its patients' or its
# doctors' home) whose data key its keys.db does not hold, by (patient home, doctor home).
import collections, os, sqlite3, sys

if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
    sys.exit("usage: scripts/missing-keys.py DATA_DIR (a stopped cluster's data directory)")
base = sys.argv[1]
for index, name in enumerate(["hospital", "clinic", "pharmacy", "insurance"]):
    k = sqlite3.connect(f"file:{base}/{name}/keys.db?mode=ro", uri=True)
    held = set(r[0] for r in k.execute("select tx from data_keys"))
    c = sqlite3.connect(f"file:{base}/{name}/chain.db?mode=ro", uri=True)
    home = {r[0]: r[1] for r in c.execute("select person, home from persons")}
    out = {}
    for table, q in [("records", "select r.patient, r.doctor, t.id from records r join transactions t on t.tx = r.tx"),
                     ("grants", "select g.patient, g.doctor, t.id from grants g join transactions t on t.tx = g.tx")]:
        total, missing = collections.Counter(), collections.Counter()
        for patient, doctor, tid in c.execute(q):
            ph, dh = home.get(patient), home.get(doctor)
            if index in (ph, dh):
                total[(ph, dh)] += 1
                if tid not in held:
                    missing[(ph, dh)] += 1
        out[table] = (sum(total.values()), sum(missing.values()), missing.get((index, index), 0))
    print(name, "held", len(held), {t: f"{m} of {n} missing, {own} own" for t, (n, m, own) in out.items()})
