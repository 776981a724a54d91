#!/usr/bin/env python3
"""Builds src/web/oui.tsv, the embedded MAC vendor table, from the IEEE registry's MA-L assignments.

Input: the IEEE's oui.csv (Debian package ieee-data: /usr/share/ieee-data/oui.csv, or
https://standards-oui.ieee.org/oui/oui.csv). Output: one line per 24-bit prefix, sorted, "XXXXXX<TAB>Name".
Names are the registry's, with whitespace collapsed and control characters dropped; the UI shows them as text.
Usage: scripts/oui.py [oui.csv] > src/web/oui.tsv
"""
import csv
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/ieee-data/oui.csv"
rows = {}
with open(path, newline="", encoding="utf-8", errors="replace") as f:
    for r in csv.DictReader(f):
        if r.get("Registry") != "MA-L":
            continue
        prefix = r["Assignment"].strip().upper()
        if len(prefix) != 6 or any(c not in "0123456789ABCDEF" for c in prefix):
            continue
        name = " ".join("".join(c for c in r["Organization Name"] if c.isprintable()).split())
        if name:
            rows[prefix] = name[:80]
for prefix in sorted(rows):
    sys.stdout.write(f"{prefix}\t{rows[prefix]}\n")
