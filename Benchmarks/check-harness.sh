#!/bin/sh
# Checks of the benchmark's reporting, not of any figure: a few seconds after
# `swift build -c release --package-path Benchmarks --product multiprocessing-bench` (BENCH= another
# build of it). Prints one line per check and exits 1 if one fails. Charts and README checks read
# the report of check 1.
# 1. A peer that fails (here every Python peer: a python3 that exits 1) is reported as such, in place
#    of its figure, its targets say "not checked", and the run goes on to write its report.
# 2. The charts draw this library's rows ("engine …") in their own colour.
# 3. `make readme-results` refuses a report from a --quick or one-suite run.
set -u
here=$(cd "$(dirname "$0")" && pwd)
bench=${BENCH:-$here/.build/release/multiprocessing-bench}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
check() {  # check NAME COMMAND...
    name=$1
    shift
    if "$@" >/dev/null 2>&1; then echo "ok: $name"; else echo "FAILED: $name"; failed=1; fi
}

mkdir -p "$work/bin"
printf '#!/bin/sh\nexit 1\n' >"$work/bin/python3"
chmod +x "$work/bin/python3"
check "a failing peer does not stop the bench" \
    env PATH="$work/bin:$PATH" "$bench" --suite pool --quick --json "$work/pool.json" --markdown "$work/pool.md"
check "the failed peer's row says so" grep -q '| Python Pool.map | n/a (failed: ' "$work/pool.md"
check "a target on a failed row says it was not checked" \
    grep -q 'at least 2× faster than Pool.map: not checked' "$work/pool.md"

if python3 -c 'import matplotlib' 2>/dev/null; then
    check "the charts colour this library's rows" python3 - "$here/python/chart.py" "$work/pool.json" <<'EOF'
import contextlib, importlib.util, io, json, sys, tempfile
import matplotlib.axes
spec = importlib.util.spec_from_file_location("chart", sys.argv[1])
chart = importlib.util.module_from_spec(spec)
spec.loader.exec_module(chart)
coloured, barh = [], matplotlib.axes.Axes.barh
def recording(self, labels, values, color=None, **kw):
    coloured.extend(label for label, c in zip(labels, color) if c == "#d9480f")
    return barh(self, labels, values, color=color, **kw)
matplotlib.axes.Axes.barh = recording
with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(io.StringIO()):
    chart.main(sys.argv[2], d)
engine = [r["impl"] for r in json.load(open(sys.argv[2]))["results"] if r["impl"].startswith("engine") and r.get("median")]
sys.exit(0 if engine and sorted(coloured) == sorted(engine) else f"coloured {coloured}, engine rows {engine}")
EOF
else
    echo "skipped: the charts (no matplotlib)"
fi

mkdir -p "$work/tree/Benchmarks" "$work/tree/bench-results"
cp "$here/readme_results.py" "$work/tree/Benchmarks/"
cp "$work/pool.md" "$work/tree/bench-results/latest.md" 2>/dev/null
printf '<!-- results:begin -->\n<!-- results:end -->\n' >"$work/tree/README.md"
check "readme-results refuses a quick, one-suite report" \
    sh -c "test -s '$work/tree/bench-results/latest.md' && ! python3 '$work/tree/Benchmarks/readme_results.py'"
exit $failed
