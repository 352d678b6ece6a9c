#!/usr/bin/env python3
"""Size figures for issue 14: Rust files over 600 lines and functions over 80
lines (from `fn` to its closing brace, tests included) below the given
directories (default: perf-user/src).

Usage: scripts/code_stats.py [DIR...]
"""
import os
import re
import sys

FILE_LIMIT = 600
FN_LIMIT = 80
FN_RE = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"C\"\s+)?fn\s+(\w+)")


def strip(line):
    """The line without string literals, char literals and // comments, so
    braces are counted from code only (good enough for this code base)."""
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return line.split("//", 1)[0]


def functions(path):
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    out = []
    i = 0
    while i < len(lines):
        m = FN_RE.match(lines[i])
        if not m:
            i += 1
            continue
        name, start = m.group(7), i
        depth, opened = 0, False
        j = i
        while j < len(lines):
            code = strip(lines[j])
            if not opened and ";" in code and "{" not in code:
                break  # a declaration without a body
            depth += code.count("{") - code.count("}")
            opened = opened or "{" in code
            if opened and depth <= 0:
                break
            j += 1
        if opened:
            out.append((name, start + 1, j - start + 1))
        i += 1  # nested fns are counted too
    return out, len(lines)


def main():
    dirs = sys.argv[1:] or ["perf-user/src"]
    big_files, big_fns = [], []
    for d in dirs:
        for root, _, names in os.walk(d):
            for n in names:
                if not n.endswith(".rs"):
                    continue
                p = os.path.join(root, n)
                fns, total = functions(p)
                if total > FILE_LIMIT:
                    big_files.append((total, p))
                big_fns += [(length, p, line, name) for name, line, length in fns if length > FN_LIMIT]
    print(f"files over {FILE_LIMIT} lines: {len(big_files)}")
    for total, p in sorted(big_files, reverse=True):
        print(f"  {total:5} {p}")
    print(f"functions over {FN_LIMIT} lines: {len(big_fns)}")
    for length, p, line, name in sorted(big_fns, reverse=True):
        print(f"  {length:5} {p}:{line} {name}")


if __name__ == "__main__":
    main()
