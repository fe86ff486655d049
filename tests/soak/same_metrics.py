"""Exits 0 when two metrics.jsonl files hold the same records, timing fields aside."""
import json
import sys

TIMING = {"elapsed_s", "tokens_per_s"}


def records(path):
    with open(path) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f if line.strip()]


def main():
    a, b = records(sys.argv[1]), records(sys.argv[2])
    if a == b:
        return 0
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            print(f"metrics record {i} differs: {x} vs {y}", file=sys.stderr)
            return 1
    print(f"metrics: {len(a)} vs {len(b)} records", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
