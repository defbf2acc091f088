"""Summarise an Autobahn|Testsuite fuzzingclient report (reports/index.json) and decide.

    python tests/autobahn/report.py REPORTS/index.json [--agent krait] [--markdown]

Prints a count per section and per outcome, then every case that is not plain OK. Exits 1 when
the report is missing or has no case, when a case FAILED (its behaviour, or its closing
behaviour FAILED, WRONG CODE or UNCLEAN), and — strict — when a case is anything but OK:
NON-STRICT (allowed by the RFC, but krait does better now) and UNIMPLEMENTED (krait offers
permessage-deflate) fail too. INFORMATIONAL is accepted only for the cases Autobahn always
rates so, whatever the server does (7.1.6, 7.13.1, 7.13.2: "actual events are undefined by
the spec"). ``--accept NON-STRICT`` (repeatable) accepts an outcome again."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

ACCEPTED = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED")
BAD_CLOSE = ("FAILED", "WRONG CODE", "UNCLEAN")
# Cases whose outcome autobahntestsuite sets to INFORMATIONAL unconditionally
# (case7_1_6.py, case7_13_1.py, case7_13_2.py): they can never be OK.
ALWAYS_INFORMATIONAL = frozenset({"7.1.6", "7.13.1", "7.13.2"})
SECTIONS = {
    "1": "Framing", "2": "Pings/Pongs", "3": "Reserved bits", "4": "Opcodes",
    "5": "Fragmentation", "6": "UTF-8 handling", "7": "Close handling",
    "9": "Limits/performance", "10": "Misc", "12": "permessage-deflate (payloads)",
    "13": "permessage-deflate (parameters)",
}


def case_key(case: str) -> list[int]:
    return [int(part) for part in case.split(".")]


def failed(result: dict[str, object]) -> bool:
    return result["behavior"] == "FAILED" or result["behaviorClose"] in BAD_CLOSE


def not_strict(case: str, result: dict[str, object], accept: set[str]) -> bool:
    """Not FAILED, but not OK either, and not an outcome accepted for this case."""
    ok = {"OK"} | accept
    if case in ALWAYS_INFORMATIONAL:
        ok.add("INFORMATIONAL")
    return result["behavior"] not in ok or result["behaviorClose"] not in ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("--agent", default="krait")
    parser.add_argument("--markdown", action="store_true", help="tables for docs/autobahn.md")
    parser.add_argument("--accept", action="append", default=[], metavar="OUTCOME",
                        choices=ACCEPTED[1:], help="accept this outcome besides OK")
    args = parser.parse_args(argv)
    accept = set(args.accept)
    try:
        results = json.loads(args.index.read_text())[args.agent]
    except (OSError, ValueError, KeyError) as exc:
        print(f"autobahn: no usable report for {args.agent!r} in {args.index}: {exc}")
        return 1
    if not results:
        print("autobahn: the report has no case")
        return 1

    by_section: dict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    for case, result in results.items():
        outcome = "FAILED" if failed(result) else str(result["behavior"])
        by_section[case.split(".")[0]][outcome] += 1
        totals[outcome] += 1
    outcomes = [o for o in ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
                if totals[o]] + sorted(set(totals) - set(ACCEPTED) - {"FAILED"})
    slow = sorted(results.items(), key=lambda kv: -int(kv[1].get("duration", 0)))[:5]
    others = sorted(((c, r) for c, r in results.items()
                     if r["behavior"] != "OK" or r["behaviorClose"] != "OK"),
                    key=lambda kv: case_key(kv[0]))
    total_ms = sum(int(r.get("duration", 0)) for r in results.values())

    if args.markdown:
        print("| section | " + " | ".join(outcomes) + " | cases |")
        print("|---|" + "---|" * (len(outcomes) + 1))
        for section in sorted(by_section, key=int):
            counts = by_section[section]
            name = SECTIONS.get(section, "")
            print(f"| {section}. {name} | " + " | ".join(str(counts[o]) for o in outcomes)
                  + f" | {sum(counts.values())} |")
        print("| **total** | " + " | ".join(f"**{totals[o]}**" for o in outcomes)
              + f" | **{len(results)}** |")
        print()
        print("| case | behaviour | closing behaviour | ms |")
        print("|---|---|---|---|")
        for case, r in others:
            print(f"| {case} | {r['behavior']} | {r['behaviorClose']} | {r.get('duration')} |")
        print()
        print(f"Sum of case durations: {total_ms / 1000:.1f} s; slowest: "
              + ", ".join(f"{c} ({int(r.get('duration', 0)) / 1000:.1f} s)" for c, r in slow))
    else:
        print(f"autobahn: {len(results)} cases, " + ", ".join(
            f"{totals[o]} {o}" for o in outcomes) + f" ({total_ms / 1000:.1f} s of cases)")
        for section in sorted(by_section, key=int):
            counts = by_section[section]
            print(f"  {section:>3}. {SECTIONS.get(section, ''):<32} " + ", ".join(
                f"{n} {o}" for o, n in sorted(counts.items())))
        for case, r in others:
            mark = "FAILED" if failed(r) else "not OK" if not_strict(case, r, accept) \
                else "accepted"
            print(f"  {mark:<8} {case:<8} behaviour {r['behavior']}, closing "
                  f"{r['behaviorClose']}")
    bad = [case for case, r in results.items() if failed(r)]
    if bad:
        print("autobahn: FAILED: " + ", ".join(sorted(bad, key=case_key)))
    strict = [case for case, r in results.items() if not failed(r) and not_strict(case, r, accept)]
    if strict:
        print("autobahn: not OK (strict): " + ", ".join(
            f"{case} {results[case]['behavior']}/{results[case]['behaviorClose']}"
            for case in sorted(strict, key=case_key)))
    return 1 if bad or strict else 0


if __name__ == "__main__":
    sys.exit(main())
