#!/bin/bash
# Figures for issue 12: transfer throughput, and `cairn bench` workload A on
# nodes 1-3 while node4 copies its share at 1 MB/s against the same run
# before node4 joined and after its move settled; then node5 joins
# unthrottled. Run from the repository
# root after `cargo build --release -p cairn` (ports 8180-8184, 8280-8284).
B=${CAIRN_BIN:-target/release/cairn}
D=${FIG_DIR:-/tmp/cairn-transfer-figures}; rm -rf $D; mkdir -p $D
start() { id=$1; http=$2; peer=$3; tb=$4; shift 4; setsid $B serve --node-id $id --http 127.0.0.1:$http --peer 127.0.0.1:$peer --data-dir $D/$id --transfer-bytes-per-s $tb "$@" > $D/$id.out 2> $D/$id.log & echo $! >> $D/pids; }
start node1 8180 8280 1000000
sleep 1
start node2 8181 8281 1000000 --seed 127.0.0.1:8280
start node3 8182 8282 1000000 --seed 127.0.0.1:8280
for i in $(seq 1 60); do
  n=$(curl -s 127.0.0.1:8180/cluster | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(1 for m in d["members"] if m["partitions"]>0))' 2>/dev/null)
  [ "$n" = 3 ] && break; sleep 0.5
done
URLS=http://127.0.0.1:8180,http://127.0.0.1:8181,http://127.0.0.1:8182
$B bench --urls $URLS --merge siblings --keys 100000 --workload a --duration-s 12 --json > $D/base.json 2> $D/base.err
poll() { # node port -> until ring_move null; prints t keys bytes
  t0=$(date +%s.%N)
  while true; do
    s=$(curl -s 127.0.0.1:$1/cluster)
    echo "$(date +%s.%N) $s" >> $D/poll-$1.log
    echo "$s" | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d["ring_move"] is None and any(m["id"]==d["node"] and m["partitions"]>0 for m in d["members"]) else 1)' 2>/dev/null && break
    sleep 0.25
  done
  t1=$(date +%s.%N); echo "move took $(python3 -c "print($t1-$t0)") s"
}
start node4 8183 8283 1000000 --seed 127.0.0.1:8280
$B bench --urls $URLS --no-load --keys 100000 --workload a --duration-s 12 --json > $D/during.json 2> $D/during.err &
BP=$!
poll 8183 > $D/move4.txt
wait $BP
# The same four nodes once the move settled: what a fourth process and its
# replica traffic cost on this machine without any transfer.
poll 8183 > /dev/null
$B bench --urls $URLS --no-load --keys 100000 --workload a --duration-s 12 --json > $D/after.json 2> $D/after.err
# An unthrottled join: node5 copies as fast as it can.
start node5 8184 8284 1000000000 --seed 127.0.0.1:8280
poll 8184 > $D/move5.txt
cat $D/move4.txt $D/move5.txt
for f in base during after; do python3 -c "
import json; d=json.load(open('$D/$f.json'))
print('$f', json.dumps({k: d[k] for k in d if k in ('ops_per_s','throughput','p50_ms','p99_ms','p999_ms','errors','latency')})[:600])"; done
for port in 8183 8184; do python3 - "$D/poll-$port.log" <<'PY'
import json, sys
first = last = None
for line in open(sys.argv[1]):
    t, _, body = line.partition(' ')
    try:
        d = json.loads(body)
    except ValueError:
        continue
    if d.get('transfers'):
        first = first or (float(t), d['transfers'][0])
        last = (float(t), d['transfers'][0])
if first and last and last[0] > first[0]:
    dt = last[0] - first[0]
    print(sys.argv[1], 'keys', last[1]['keys'], 'bytes', last[1]['bytes'],
          'MB/s', round((last[1]['bytes'] - first[1]['bytes']) / dt / 1e6, 2),
          'keys/s', round((last[1]['keys'] - first[1]['keys']) / dt))
PY
done
kill $(cat $D/pids) 2>/dev/null
