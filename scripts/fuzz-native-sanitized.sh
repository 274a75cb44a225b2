#!/usr/bin/env bash
# The compiled fast-path check (flows/transform/_fastcheck.c) built with AddressSanitizer and UBSan, then
# fuzzed against its reference (tests/test_fastcheck_native.py): any read past a buffer, any undefined
# behaviour, stops the run. Part of `make fuzz`; FASTCHECK_EXAMPLES sets how many chunks.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

py=${PY:-.venv/bin/python}
cc=${CC:-gcc}
have "$cc" || die "needs a C compiler ($cc) with AddressSanitizer (gcc: the libasan and libubsan it ships)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
suffix=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
library="$out/_fastcheck$suffix"
"$cc" -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
  -std=c11 -Wall -Wextra -fPIC -shared -I"$include" flows/transform/_fastcheck.c -o "$library"
log "fuzzing $library (FASTCHECK_EXAMPLES=${FASTCHECK_EXAMPLES:-20000})"
# Python itself is not instrumented: only the sanitizers' runtime is preloaded; its leak report would
# list the interpreter's own allocations.
LD_PRELOAD="$("$cc" -print-file-name=libasan.so) $("$cc" -print-file-name=libubsan.so)" \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  FASTCHECK_LIBRARY="$library" FASTCHECK_EXAMPLES=${FASTCHECK_EXAMPLES:-20000} HYPOTHESIS_PROFILE=fuzz \
  "$py" -m pytest -q -p no:cacheprovider tests/test_fastcheck_native.py
