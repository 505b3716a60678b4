"""The prep → train → eval scripts that the `roar diff` and web view tests record: prep.py
upper-cases raw rows, train.py writes a model scored by `--lr`, eval.py its metrics."""

PREP = """\
import sys
src, dst = sys.argv[1], sys.argv[2]
rows = open(src).read().splitlines()
open(dst, "w").write("\\n".join(r.upper() for r in rows) + "\\n")
"""

TRAIN = """\
import argparse
p = argparse.ArgumentParser()
p.add_argument("--data")
p.add_argument("--out")
p.add_argument("--lr", type=float, default=0.1)
a = p.parse_args()
rows = open(a.data).read().splitlines()
score = len(rows) * a.lr
open(a.out, "w").write(f"model rows={len(rows)} score={score}\\n")
"""

EVAL = """\
import json, sys
model = open(sys.argv[1]).read()
json.dump({"metric": len(model), "model": model.strip()}, open(sys.argv[2], "w"))
"""
