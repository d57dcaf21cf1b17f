"""Shortens the frames of folded stacks (inferno-collapse-perf) for a
flame graph that can be read and kept: generic arguments and closure
markers are dropped, so `poll<confab::ws::Event, …>` reads `poll`.

    inferno-collapse-perf <script | python3 bench/fold_names.py | inferno-flamegraph
"""

import sys


def short(frame):
    out, depth = [], 0
    for ch in frame:
        if ch == "<":
            depth += 1
        elif ch == ">" and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out).replace("::{{closure}}", "").replace(" (inlined)", "") or frame


for line in sys.stdin:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    print(";".join(short(f) for f in stack.split(";")) + " " + count)
