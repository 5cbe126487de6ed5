#!/bin/bash
# usage: aebench.sh MODE(on|off) ROUND
set -e
BIN=${CAIRN_BIN:-target/release/cairn}
MODE=$1; ROUND=$2
D=/var/tmp/aeb-$MODE-$ROUND; rm -rf $D; mkdir -p $D
AE=""; [ "$MODE" = off ] && AE="--antientropy-every-ms 0"
$BIN serve --node-id n1 --http 127.0.0.1:18080 --peer 127.0.0.1:18180 --data-dir $D/n1 $AE > $D/n1.out 2>$D/n1.log &
P1=$!
sleep 1
$BIN serve --node-id n2 --http 127.0.0.1:18081 --peer 127.0.0.1:18181 --data-dir $D/n2 --seed 127.0.0.1:18180 $AE > $D/n2.out 2>$D/n2.log &
P2=$!
$BIN serve --node-id n3 --http 127.0.0.1:18082 --peer 127.0.0.1:18182 --data-dir $D/n3 --seed 127.0.0.1:18180 $AE > $D/n3.out 2>$D/n3.log &
P3=$!
for i in $(seq 100); do
  n=$(curl -s 127.0.0.1:18082/cluster | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(1 for m in d["members"] if m["status"]=="up" and m["partitions"]>0))' 2>/dev/null || echo 0)
  [ "$n" = 3 ] && break; sleep 0.2
done
URLS=http://127.0.0.1:18080,http://127.0.0.1:18081,http://127.0.0.1:18082
$BIN bench --urls $URLS --merge lww --workload w --clients 32 --ops 20000 --keys 20000 > /dev/null
W=$($BIN bench --urls $URLS --no-load --workload w --clients 32 --duration-s 10 --keys 20000 --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["ops_per_s"]), d.get("errors"))')
C=$($BIN bench --urls $URLS --no-load --workload c --clients 32 --duration-s 10 --keys 20000 --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["ops_per_s"]), d.get("errors"))')
AEJ=$(curl -s 127.0.0.1:18080/cluster | python3 -c 'import json,sys; d=json.load(sys.stdin).get("antientropy"); print(d and {k:d[k] for k in ("exchanges","keys_repaired","bytes_sent","keys_held")})')
echo "$MODE round $ROUND: W $W C $C ae=$AEJ"
kill $P1 $P2 $P3; wait 2>/dev/null
rm -rf $D
