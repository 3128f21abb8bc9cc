#!/usr/bin/env bash
# One live and one sham (yoked) neurofeedback run on the digital twin, assigned by a blinded allocation file,
# then their CRED-nf reports side by side. Uses what `make demo` left in demo-out/ (its bundle and its twin).
#
#   docs/examples/sham-feedback.sh [DEMO_OUT] [FMRIFACE]
#
# Participant P01 gets live feedback while the scanner emulator replays the demo's held-out test run
# (ses-02 run-04); participant P02 gets the feedback P01's run recorded, volume by volume and trial by trial,
# while the emulator replays another test run (ses-01 run-04) as P02's brain. Neither `serve` command line says
# which condition is which: the service reads it from allocation.tsv. The neurofeedback target is one test face.
set -euo pipefail

OUT=${1:-demo-out}
FMRIFACE=${2:-.venv/bin/fmriface}
BUNDLE=$OUT/fit/bundle
FUNC=$OUT/twin/sub-01
EX=$OUT/sham-example
TARGET=test_08.png
VOLUMES=195

[ -f "$BUNDLE/manifest.json" ] || { echo "no bundle in $BUNDLE: run 'make demo' first" >&2; exit 1; }
rm -rf "$EX"
mkdir -p "$EX/runs"

# The sealed list: the service reads it, the experimenter running the session need not.
printf 'participant_id\tcondition\tsource_run\n' >"$EX/allocation.tsv"
printf 'P01\tlive\tn/a\n' >>"$EX/allocation.tsv"
printf 'P02\tsham\truns/sub-P01\n' >>"$EX/allocation.tsv"

session() {  # participant, BIDS run (without _bold.nii.gz)
    local who=$1 run=$2
    echo "== participant $who: serve + the scanner emulator replaying $(basename "$run")" >&2
    mkdir -p "$EX/scan-$who"
    "$FMRIFACE" serve --bundle "$BUNDLE" --watch "$EX/scan-$who" --runs "$EX/runs" --run-id "sub-$who" \
        --allocation "$EX/allocation.tsv" --participant "$who" \
        --events "${run}_events.tsv" --target-stim "$TARGET" --max-volumes "$VOLUMES" \
        --pub 'tcp://127.0.0.1:*' --pull 'tcp://127.0.0.1:*' --idle-timeout 20 >"$EX/serve-$who.json" \
        2>"$EX/serve-$who.log" &
    local serve=$! waited=0
    until grep -q "serving run" "$EX/serve-$who.log" 2>/dev/null; do  # the bundle loaded, the watcher started
        kill -0 "$serve" 2>/dev/null || { cat "$EX/serve-$who.log" >&2; exit 1; }
        [ $((waited += 1)) -lt 600 ] || { echo "serve did not start within 60 s" >&2; exit 1; }
        sleep 0.1
    done
    "$FMRIFACE" replay --run "${run}_bold.nii.gz" --to "$EX/scan-$who" --speed 10 --max-volumes "$VOLUMES" \
        2>"$EX/replay-$who.log"
    wait "$serve" || { echo "serve failed; see $EX/serve-$who.log" >&2; tail -3 "$EX/serve-$who.log" >&2; exit 1; }
}

session P01 "$FUNC/ses-02/func/sub-01_ses-02_task-faces_run-04"
session P02 "$FUNC/ses-01/func/sub-01_ses-01_task-faces_run-04"

"$FMRIFACE" report "$EX/runs/sub-P01" "$EX/runs/sub-P02" | tee "$EX/report.md"
