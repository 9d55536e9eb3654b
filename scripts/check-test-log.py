"""Judges a test log per suite, not only by its grand total: every Rust
test binary that has tests, and the SDK suite, must report at least one
passed test, none failed and none skipped (ignored). Prints one closing
line `N passed, M failed` and exits non-zero on any violation."""

import re
import sys

log = open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines()
suite = None
problems, passed, failed = [], 0, 0
rust_suites = sdk_suites = 0
for line in log:
    m = re.match(r"\s+Running (\S+)|\s+Doc-tests (\S+)", line)
    if m:
        suite = m.group(1) or f"doc-tests {m.group(2)}"
        continue
    m = re.match(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", line)
    if m:
        p, f, i = map(int, m.groups())
        passed, failed = passed + p, failed + f
        if p + f + i == 0:
            continue
        rust_suites += 1
        if p == 0 or f or i:
            problems.append(f"{suite}: {p} passed, {f} failed, {i} ignored")
        continue
    # pytest's summary: "12 passed in 3.1s", "11 passed, 1 skipped in …".
    m = re.match(r"=*\s*(\d+ (passed|failed|skipped|error|errors)\b.*) in [\d.]+s", line)
    if m:
        counts = {k: int(n) for n, k in re.findall(r"(\d+) (\w+)", m.group(1))}
        p = counts.get("passed", 0)
        f = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
        passed, failed = passed + p, failed + f
        sdk_suites += 1
        if p == 0 or f or counts.get("skipped", 0) or counts.get("xfailed", 0):
            problems.append(f"SDK tests (pytest): {m.group(1)}")
if rust_suites == 0:
    problems.append("no Rust test binary reported a result")
if sdk_suites == 0:
    problems.append("the SDK tests (pytest) reported no result")
for p in problems:
    print(f"suite check: {p}")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if problems or failed or passed == 0 else 0)
