# Sourced by the experiment scripts. `timed NAME COMMAND...` runs COMMAND once: skipped when
# $OUT/NAME/report.json exists (rerunning a script resumes it), output appended to
# $OUT/logs/NAME.log with the commit at the start and the wall time at the end.
timed() {
  local name=$1; shift
  if [[ -f "$OUT/$name/report.json" ]]; then echo "skip $name (done)"; return; fi
  echo "run  $name (commit $(git rev-parse --short HEAD)): $*" | tee -a "$OUT/logs/$name.log"
  local start=$SECONDS
  "$@" >> "$OUT/logs/$name.log" 2>&1
  echo "wall_s $((SECONDS - start))" | tee -a "$OUT/logs/$name.log"
}
