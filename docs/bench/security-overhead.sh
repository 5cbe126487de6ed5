#!/bin/bash
# Bench C and W against a plain 3-node cluster and a secured one (cluster
# secret + TLS + --auth required), same machine, one run. From the repo
# root, after `cargo build --release -p cairn`:
#   docs/bench/security-overhead.sh
# Needs openssl (for the test certificates) and ports 7101-7213.
set -e
BIN=${BIN:-$(pwd)/target/release/cairn}
D=${D:-/var/tmp/secbench}
rm -rf $D/plain $D/secure; mkdir -p $D/plain $D/secure
cd $D
# certificates
if [ ! -f ca.pem ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=bench CA" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout key.pem -out req.csr -subj "/CN=127.0.0.1" 2>/dev/null
  printf "subjectAltName=IP:127.0.0.1\n" > ext.cnf
  openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile ext.cnf 2>/dev/null
fi
echo "a cluster secret for the bench run" > secret
echo "an admin key for the bench run, long" > admin.key
pids=()
start() { # name http peer extra...
  local name=$1 http=$2 peer=$3; shift 3
  $BIN serve --node-id $(basename $name) --http 127.0.0.1:$http --peer 127.0.0.1:$peer --data-dir $D/$name "$@" > $D/$name.out 2> $D/$name.log &
  pids+=($!)
}
start plain/n1 7101 7201
start plain/n2 7102 7202 --seed 127.0.0.1:7201
start plain/n3 7103 7203 --seed 127.0.0.1:7201
S="--cluster-secret-file $D/secret --tls-cert $D/cert.pem --tls-key $D/key.pem --auth required --admin-key-file $D/admin.key"
start secure/n1 7111 7211 $S
start secure/n2 7112 7212 --seed 127.0.0.1:7211 $S
start secure/n3 7113 7213 --seed 127.0.0.1:7211 $S
trap 'kill ${pids[@]} 2>/dev/null' EXIT
sleep 6
P="http://127.0.0.1:7101,http://127.0.0.1:7102,http://127.0.0.1:7103"
Q="https://127.0.0.1:7111,https://127.0.0.1:7112,https://127.0.0.1:7113"
export CAIRN_API_KEY="$(cat admin.key)"
$BIN table create bench --n 3 --r 2 --w 2 --merge lww --url http://127.0.0.1:7101
$BIN --ca-cert $D/ca.pem table create bench --n 3 --r 2 --w 2 --merge lww --url https://127.0.0.1:7111
sleep 2
for w in c w; do
  for side in plain secure; do
    if [ $side = plain ]; then U=$P; CA=""; else U=$Q; CA="--ca-cert $D/ca.pem"; fi
    $BIN $CA bench --urls $U --workload $w --keys 10000 --clients 32 --duration-s 20 --json > $D/$side-$w.json 2>/dev/null
    echo "$side $w: $(python3 -c "import json;d=json.load(open('$D/$side-$w.json'));l=list(d['latency'].values())[0];print(round(d['ops_per_s']), 'ops/s p50', l['p50_ms'], 'p99', l['p99_ms'], 'errors', d['errors'])")"
  done
done
