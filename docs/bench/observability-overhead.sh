#!/bin/bash
# What metrics and tracing cost: `cairn bench` workload A against a 3-node
# cluster with metrics on and logs at the default level (RUST_LOG=info), and
# against one with `--metrics off` and RUST_LOG=off, same machine, one run,
# the two clusters alternating. From the repo root, after
# `cargo build --release -p cairn`:
#   docs/bench/observability-overhead.sh
# Needs ports 7301-7413.
set -e
BIN=${BIN:-$(pwd)/target/release/cairn}
D=${D:-/var/tmp/obsbench}
ROUNDS=${ROUNDS:-2}
rm -rf $D/on $D/off; mkdir -p $D/on $D/off
pids=()
start() { # name http peer log-filter extra...
  local name=$1 http=$2 peer=$3 filter=$4; shift 4
  RUST_LOG=$filter $BIN serve --node-id $(basename $name) --http 127.0.0.1:$http --peer 127.0.0.1:$peer --data-dir $D/$name "$@" > $D/$name.out 2> $D/$name.log &
  pids+=($!)
}
start on/n1 7301 7401 info
start on/n2 7302 7402 info --seed 127.0.0.1:7401
start on/n3 7303 7403 info --seed 127.0.0.1:7401
start off/n1 7311 7411 off --metrics off
start off/n2 7312 7412 off --metrics off --seed 127.0.0.1:7411
start off/n3 7313 7413 off --metrics off --seed 127.0.0.1:7411
trap 'kill ${pids[@]} 2>/dev/null' EXIT
sleep 6
ON="http://127.0.0.1:7301,http://127.0.0.1:7302,http://127.0.0.1:7303"
OFF="http://127.0.0.1:7311,http://127.0.0.1:7312,http://127.0.0.1:7313"
$BIN table create bench --n 3 --r 2 --w 2 --merge lww --url http://127.0.0.1:7301
$BIN table create bench --n 3 --r 2 --w 2 --merge lww --url http://127.0.0.1:7311
sleep 2
for round in $(seq $ROUNDS); do
  for side in on off; do
    if [ $side = on ]; then U=$ON; else U=$OFF; fi
    $BIN bench --urls $U --workload a --keys 10000 --clients 32 --duration-s 20 --json > $D/$side-$round.json 2>/dev/null
    echo "round $round $side: $(python3 -c "import json;d=json.load(open('$D/$side-$round.json'));l=d['latency'];print(round(d['ops_per_s']), 'ops/s', {k:(v['p50_ms'],v['p99_ms']) for k,v in l.items()}, 'errors', d['errors'])")"
  done
done
python3 - $D $ROUNDS <<'PY'
import json, sys
d, rounds = sys.argv[1], int(sys.argv[2])
ops = {s: sum(json.load(open(f"{d}/{s}-{r}.json"))["ops_per_s"] for r in range(1, rounds + 1)) / rounds for s in ("on", "off")}
print(f"mean ops/s: on {ops['on']:.0f}, off {ops['off']:.0f}; on/off = {ops['on'] / ops['off']:.3f}")
PY
