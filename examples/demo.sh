#!/usr/bin/env bash
# The README demo: a small real pipeline (prepare → train → evaluate) recorded by roar in a
# fresh scratch repository, then the questions a user asks of it.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
work="${ROAR_DEMO_DIR:-$here/demo-work}"
rm -rf "$work"
mkdir -p "$work"
cd "$work"

# Commands in bold on a terminal only: redirected to a file, the output stays plain text.
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
show() { printf '\n%s$ %s%s\n' "$bold" "$*" "$plain"; }
step() { show "$@"; "$@"; }
# diff(1)-style commands exit 1 when they find a difference: show it, keep going.
step_may_differ() { show "$@"; "$@" || [ $? -eq 1 ]; }
hash_of() { roar show "$1" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["hash"])'; }

git init -q -b main
git config user.name "Demo User"
git config user.email demo@example.com

mkdir -p data
python3 - <<'PY'
import random
random.seed(7)
with open("data/raw.csv", "w") as f:
    f.write("x,y\n")
    for _ in range(200):
        x = random.uniform(0, 10)
        f.write(f"{x:.4f},{3 * x + 2 + random.gauss(0, 1):.4f}\n")
PY

cat > prepare.py <<'PY'
"""Drop rows with an x outside [0.5, 9.5] and write a clean split."""
import csv, sys
src, train_out, test_out = sys.argv[1:4]
rows = [r for r in csv.DictReader(open(src)) if 0.5 <= float(r["x"]) <= 9.5]
for path, part in ((train_out, rows[::2] + rows[1::4]), (test_out, rows[3::4])):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["x", "y"])
        w.writeheader()
        w.writerows(part)
PY

cat > train.py <<'PY'
"""Fit y = a*x + b by gradient descent; the learning rate is a parameter."""
import argparse, csv, json
p = argparse.ArgumentParser()
p.add_argument("--data"); p.add_argument("--out"); p.add_argument("--lr", type=float, default=0.01)
p.add_argument("--epochs", type=int, default=300)
args = p.parse_args()
pts = [(float(r["x"]), float(r["y"])) for r in csv.DictReader(open(args.data))]
a = b = 0.0
for _ in range(args.epochs):
    ga = sum(2 * (a * x + b - y) * x for x, y in pts) / len(pts)
    gb = sum(2 * (a * x + b - y) for x, y in pts) / len(pts)
    a, b = a - args.lr * ga, b - args.lr * gb
json.dump({"a": round(a, 6), "b": round(b, 6)}, open(args.out, "w"))
PY

cat > evaluate.py <<'PY'
"""Mean squared error of the model on the test split."""
import csv, json, sys
model, test, out = sys.argv[1:4]
m = json.load(open(model))
pts = [(float(r["x"]), float(r["y"])) for r in csv.DictReader(open(test))]
mse = sum((m["a"] * x + m["b"] - y) ** 2 for x, y in pts) / len(pts)
json.dump({"mse": round(mse, 6)}, open(out, "w"))
PY

git add prepare.py train.py evaluate.py
git commit -q -m "pipeline scripts"

step roar init
step roar run python prepare.py data/raw.csv data/train.csv data/test.csv
step roar run python train.py --data data/train.csv --out model.json --lr 0.01
step roar run python evaluate.py model.json data/test.csv metrics.json
step roar dag
step roar show model.json

# "Something behaved differently this run. What changed?"
first_metrics=$(hash_of metrics.json)
step roar run @2 --lr=0.02
step roar dag
step roar run @3
step_may_differ roar diff "${first_metrics:0:12}" metrics.json

# "I need to recreate this artifact": delete every output, then reproduce the final one.
target=$(hash_of metrics.json)
step rm -f data/train.csv data/test.csv model.json metrics.json
step roar reproduce "${target:0:12}"
step roar reproduce "${target:0:12}" --run -y --no-reuse -o metrics.json
step cat metrics.json
printf '\nThe demo repository is in %s: try roar show, roar lineage, roar log there.\n' "$work"
