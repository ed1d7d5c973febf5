# shellcheck shell=bash
# Shared by the launchers (sourced, not run): errors, and commands that --dry-run prints instead of running.
# The sourcing script sets NAME (for messages) and DRY_RUN (0 or 1).

die() { echo "$NAME: error: $*" >&2; exit 2; }

# quote ARG: ARG as a shell word, readable (bare when safe, else single-quoted)
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# run CMD...: print it as a shell line, then run it unless --dry-run
run() {
  local line="+" arg
  for arg in "$@"; do line+=" $(quote "$arg")"; done
  echo "$line"
  if [[ $DRY_RUN -eq 0 ]]; then "$@"; fi
}
