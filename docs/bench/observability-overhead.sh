#!/bin/bash
# What metrics and tracing cost: `cairn bench` workload A (or $WORKLOAD) against a 3-node
# cluster with metrics on and logs at the default level (RUST_LOG=info), and
# against the same cluster restarted with `--metrics off` and RUST_LOG=off;
# same machine, one run, only one cluster up at a time, the two settings
# alternating for ROUNDS rounds. From the repo root, after
# `cargo build --release -p cairn`:
#   docs/bench/observability-overhead.sh
# Needs ports 7301-7303 and 7401-7403.
set -e
BIN=${BIN:-$(pwd)/target/release/cairn}
D=${D:-/var/tmp/obsbench}
ROUNDS=${ROUNDS:-3}
WORKLOAD=${WORKLOAD:-a}
rm -rf $D; mkdir -p $D
pids=()
start() { # side: on | off
  local side=$1 filter=info extra=""
  if [ $side = off ]; then filter=off; extra="--metrics off"; fi
  pids=()
  for i in 1 2 3; do
    local seed=""
    if [ $i != 1 ]; then seed="--seed 127.0.0.1:7401"; fi
    RUST_LOG=$filter $BIN serve --node-id n$i --http 127.0.0.1:730$i --peer 127.0.0.1:740$i \
      --data-dir $D/n$i $seed $extra >> $D/n$i.out 2>> $D/n$i.log &
    pids+=($!)
  done
  for i in 1 2 3; do
    until curl -sf http://127.0.0.1:730$i/health > /dev/null; do sleep 0.2; done
  done
  sleep 3
}
stop() { kill ${pids[@]}; wait ${pids[@]} 2>/dev/null || true; }
trap 'kill ${pids[@]} 2>/dev/null' EXIT
U="http://127.0.0.1:7301,http://127.0.0.1:7302,http://127.0.0.1:7303"
start on
$BIN table create bench --n 3 --r 2 --w 2 --merge lww --url http://127.0.0.1:7301 > /dev/null
sleep 2
stop
for round in $(seq $ROUNDS); do
  for side in on off; do
    start $side
    $BIN bench --urls $U --workload $WORKLOAD --keys 10000 --clients 32 --duration-s 20 --json > $D/$side-$round.json 2>/dev/null
    stop
    echo "round $round $side: $(python3 -c "import json;d=json.load(open('$D/$side-$round.json'));l=d['latency'];print(round(d['ops_per_s']), 'ops/s', {k:(v['p50_ms'],v['p99_ms']) for k,v in l.items()}, 'errors', d['errors'])")"
  done
done
python3 - $D $ROUNDS <<'PY'
import json, sys
d, rounds = sys.argv[1], int(sys.argv[2])
ops = {s: [json.load(open(f"{d}/{s}-{r}.json"))["ops_per_s"] for r in range(1, rounds + 1)] for s in ("on", "off")}
mean = {s: sum(v) / len(v) for s, v in ops.items()}
print(f"mean ops/s: on {mean['on']:.0f}, off {mean['off']:.0f}; on/off = {mean['on'] / mean['off']:.3f}")
print("per round on/off:", " ".join(f"{a / b:.3f}" for a, b in zip(ops["on"], ops["off"])))
PY
