#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/corpus/<target>/ (seed-* files).

decode_event and decode_history: each line of tests/fixtures/producer/<subject base>.jsonl,
prefixed with the selector byte of its subject in fuzz/subjects.txt. dead_letter: the dead
letters of those lines as published (JSON kept as JSON, a batch item as a one-item batch, bytes
that are not JSON as base64). Idempotent: the fuzzer's own finds in the corpus are left alone.
"""

import base64
import json
import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
FIXTURES = FUZZ.parent / "tests" / "fixtures" / "producer"
TENANT = "CMP001"
# Subjects without a fixture of their own, seeded from one with the same payload.
ALSO = {"v1.contacts.upsert": ["v1.contacts.update"]}
HISTORY_KEYS = {"v1.history.chats": "chats", "v1.history.messages": "messages",
                "v1.history.contacts": "contacts"}


def selectors():
    """{target: {subject base: selector byte}} from subjects.txt."""
    out = {}
    for line in (FUZZ / "subjects.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            target, base = line.split()
            out.setdefault(target, {})
            out[target][base] = len(out[target])
    return out


def envelope(base, payload, error_type, item_index=None):
    env = {"source_subject": f"{base}.{TENANT}", "company": TENANT, "original_payload": None,
           "error": "seed", "error_type": error_type, "retry_count": 1, "max_retry": 5,
           "ts": 1718358000}
    try:
        env["original_payload"] = json.loads(payload)
    except ValueError:
        env["original_payload_base64"] = base64.b64encode(payload).decode()
    if item_index is not None:
        env["item_index"] = item_index
    return json.dumps(env, ensure_ascii=False).encode()


def main():
    picks = selectors()
    seeds = {target: [] for target in picks}
    seeds["dead_letter"] = []
    for path in sorted(FIXTURES.glob("*.jsonl")):
        base = path.name[: -len(".jsonl")]
        target = next((t for t, bases in picks.items() if base in bases), None)
        if target is None:
            sys.exit(f"{path}: subject {base} is in no target of fuzz/subjects.txt")
        for n, line in enumerate(path.read_bytes().splitlines()):
            if not line.strip():
                continue
            name = f"seed-{base}-{n}"
            for subject in [base] + ALSO.get(base, []):
                seeds[target].append((f"seed-{subject}-{n}", bytes([picks[target][subject]]) + line))
            seeds["dead_letter"].append((name, envelope(base, line, "validation")))
            if base in HISTORY_KEYS:
                batch = json.loads(line)
                key = HISTORY_KEYS[base]
                batch[key] = batch[key][:1]
                item = json.dumps(batch, ensure_ascii=False).encode()
                seeds["dead_letter"].append((f"{name}-item", envelope(base, item, "validation", 0)))
    # A body that is not JSON, as the realtime function dead-letters it.
    seeds["dead_letter"].append(("seed-malformed", envelope("v1.messages.upsert", b"not json\xff", "malformed")))
    for target, files in seeds.items():
        corpus = FUZZ / "corpus" / target
        corpus.mkdir(parents=True, exist_ok=True)
        for name, data in files:
            (corpus / name).write_bytes(data)
        print(f"{target}: {len(files)} seeds in {corpus.relative_to(FUZZ.parent)}")


if __name__ == "__main__":
    main()
