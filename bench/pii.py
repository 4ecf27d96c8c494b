"""PII detection: precision and recall per type on the labelled corpus
(tests/data/pii_corpus.jsonl, English, German and French), and the scan's throughput.

A finding counts as right only when its type and both offsets equal a labelled span's
(masking replaces exactly that span). ``recall_overlapping`` also counts a finding of the
right type that overlaps the span, to tell a boundary error from a miss. Throughput: the
whole corpus scanned ``--repeat`` times (median), and a long mixed section (the corpus's
texts joined) in characters per second.

    .venv/bin/python bench/pii.py [--repeat 5] [--results-dir DIR]

Writes bench/results/pii.json and bench/results/pii.md (the Markdown is regenerated whole:
the figures, the command and the machine's load)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import environment, markdown_table, results_options, shown, write_json
from prism.extraction.names import first_names
from prism.extraction.pii import TYPES, scan
from tests.pii_corpus import CORPUS, PATTERN_TYPES, evaluate, load

# What the scanner found before issue 19 (for the cost of the new types, side by side).
EARLIER_TYPES = frozenset(
    {"EMAIL", "SSN", "CREDIT_CARD", "PHONE", "IP_ADDRESS", "DATE_OF_BIRTH", "STREET_ADDRESS"}
)


def _found(text: str) -> list[tuple[str, int, int]]:
    return [(f.type, f.start, f.end) for f in scan(text)]


def measure(repeat: int) -> dict[str, Any]:
    examples = load()
    first_names()  # the gazetteer loads once per process: not part of a scan
    scores = evaluate(examples, _found)
    accuracy = [scores[kind].row() for kind in (*PATTERN_TYPES, "PERSON")]
    by_language = []
    for language in ("en", "de", "fr"):
        subset = [e for e in examples if e.language == language]
        of = evaluate(subset, _found)
        for kind in (*PATTERN_TYPES, "PERSON"):
            row = of[kind].row()
            by_language.append(
                {
                    "language": language,
                    "type": kind,
                    "positives": row["positives"],
                    "precision": row["precision"],
                    "recall": row["recall"],
                }
            )
    chars = sum(len(e.text) for e in examples)
    corpus_times = []
    for _ in range(repeat):
        started = time.perf_counter()
        for example in examples:
            scan(example.text)
        corpus_times.append(time.perf_counter() - started)
    joined = "\n".join(e.text for e in examples)
    joined_times, before_times = [], []
    for _ in range(repeat):
        # Side by side in one run: all types, and the seven types of before this release.
        started = time.perf_counter()
        scan(joined)
        joined_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        scan(joined, types=EARLIER_TYPES)
        before_times.append(time.perf_counter() - started)
    throughput = [
        {
            "input": f"{len(examples)} corpus texts, one scan each",
            "chars": chars,
            "median s": statistics.median(corpus_times),
            "chars/s": chars / statistics.median(corpus_times),
            "texts/s": len(examples) / statistics.median(corpus_times),
        },
        {
            "input": "the corpus joined into one section",
            "chars": len(joined),
            "median s": statistics.median(joined_times),
            "chars/s": len(joined) / statistics.median(joined_times),
            "texts/s": None,
        },
        {
            "input": "the same, only the 7 types scanned before (as implemented now)",
            "chars": len(joined),
            "median s": statistics.median(before_times),
            "chars/s": len(joined) / statistics.median(before_times),
            "texts/s": None,
        },
    ]
    return {
        "corpus": {
            "path": shown(CORPUS),
            "examples": len(examples),
            "with_spans": sum(1 for e in examples if e.spans),
            "near_misses": sum(1 for e in examples if not e.spans),
        },
        "types": sorted(TYPES),
        "tables": {
            "Precision and recall per type": accuracy,
            "Per language": by_language,
            "Throughput": throughput,
        },
    }


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    tables = report["tables"]
    failing = [
        row["type"]
        for row in tables["Precision and recall per type"]
        if row["type"] in PATTERN_TYPES and (row["precision"] < 0.9 or row["recall"] < 0.9)
    ]
    person = next(r for r in tables["Precision and recall per type"] if r["type"] == "PERSON")
    return "\n".join(
        [
            "# PII detection: precision and recall",
            "",
            f"Command: `{report['command']}`  ",
            f"Machine: {env['cpu']}, {env['cpus_usable']} usable cores, "
            f"{env['memory_gib']} GiB; Python {env['python']}; commit {env['commit']}"
            f"{' (prism/ modified)' if env['prism_dirty'] else ''}; {env['date']}  ",
            f"Load average (1 min): {env['loadavg_1m_start']:.2f} at the start, "
            f"{env['loadavg_1m_end']:.2f} at the end (2 cores shared with other work: the "
            "throughput is noisy; the accuracy figures are not).",
            "",
            f"Corpus: `{report['corpus']['path']}`: {report['corpus']['examples']} texts, "
            f"{report['corpus']['with_spans']} with labelled values and "
            f"{report['corpus']['near_misses']} near misses (wrong check digits, numbers "
            "without the context that makes them personal, words that are also first names), "
            "in English, German and French. A finding counts only with its type and both "
            "offsets exact. The examples were written beside the detectors (templates with "
            "generated values, and 18 hand-written contract passages): read these figures as "
            "an upper bound, not as a measurement on contracts in the field.",
            "",
            "Pattern types at >= 0.9 precision and recall: "
            + ("all." if not failing else f"NOT {', '.join(failing)}."),
            f"Names (PERSON, gazetteer and context rules): precision {person['precision']:.2f}, "
            f"recall {person['recall']:.2f}.",
            "",
            "## Precision and recall per type",
            "",
            markdown_table(tables["Precision and recall per type"]),
            "",
            "## Per language",
            "",
            markdown_table(tables["Per language"]),
            "",
            "## Throughput",
            "",
            markdown_table(tables["Throughput"]),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], parents=[results_options()]
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed scans (median kept)")
    args = parser.parse_args(argv)
    report = measure(args.repeat)
    report["command"] = " ".join([".venv/bin/python bench/pii.py", *(argv or sys.argv[1:])])
    report["environment"] = environment()
    results: Path = args.results_dir
    results.mkdir(parents=True, exist_ok=True)
    write_json(results / "pii.json", report)
    text = markdown(report)
    (results / "pii.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
