#!/usr/bin/env python3
"""Handoff and anti-entropy figures with real cairn serve processes (release build).
usage: figures.py handoff N | refill N | diverge N PERCENT | reap N"""
import json, os, shutil, signal, subprocess, sys, time, urllib.request

BIN = os.environ.get("CAIRN_BIN", "target/release/cairn")
ROOT = "/var/tmp/figs"

def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())

class Node:
    def __init__(self, i, extra, seed=True):
        self.id = f"n{i}"; self.http = f"127.0.0.1:{19080+i}"; self.peer = f"127.0.0.1:{19180+i}"
        self.dir = f"{ROOT}/{self.id}"; self.extra = extra; self.seed = seed; self.p = None
    def start(self):
        args = [BIN, "serve", "--node-id", self.id, "--http", self.http, "--peer", self.peer, "--data-dir", self.dir] + self.extra
        if self.seed: args += ["--seed", "127.0.0.1:19181"]
        self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.dir + ".log", "a"))
    def kill(self):
        self.p.send_signal(signal.SIGKILL); self.p.wait()
    def cluster(self):
        return get(f"http://{self.http}/cluster")

def wait(what, check, timeout=600):
    end = time.time() + timeout
    while time.time() < end:
        try:
            v = check()
            if v: return v
        except Exception:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out: {what}")

def cluster(count, extra):
    shutil.rmtree(ROOT, ignore_errors=True); os.makedirs(ROOT)
    nodes = [Node(i, extra + ["--partitions", "64"] if i == 1 else extra, seed=i > 1) for i in range(1, count + 1)]
    nodes[0].start(); time.sleep(0.5)
    for n in nodes[1:]: n.start()
    wait("formed", lambda: all(len([m for m in n.cluster()["members"] if m["status"] == "up" and m["partitions"] > 0]) == count for n in nodes))
    make_table(nodes[0])
    return nodes

def make_table(node):
    req = urllib.request.Request(f"http://{node.http}/tables/bench", data=b'{"n":3,"merge":"siblings"}', method="PUT")
    urllib.request.urlopen(req, timeout=10).read()
    time.sleep(1)

def bench(urls, n, table="bench"):
    subprocess.run([BIN, "bench", "--urls", ",".join(urls), "--table", table,
                    "--workload", "w", "--clients", "32", "--ops", str(n), "--keys", str(n), "--no-load", "--distribution", "sequential"],
                   check=False, stdout=open(ROOT + "/bench.out", "a"))

def handoff(n):
    nodes = cluster(4, ["--antientropy-every-ms", "0"])
    nodes[3].kill()
    wait("n4 down", lambda: all(any(m["id"] == "n4" and m["status"] == "down" for m in x.cluster()["members"]) for x in nodes[:3]))
    t = time.time()
    bench([f"http://{x.http}" for x in nodes[:3]], n)
    pend = lambda: sum(sum(x.cluster().get("hints_pending", {}).values()) for x in nodes[:3])
    kept = pend()
    print(f"handoff: {n} writes in {time.time()-t:.1f} s; {kept} hints kept for n4")
    nodes[3].start(); t = time.time()
    wait("drained", lambda: pend() == 0)
    print(f"handoff: {kept} hints drained {time.time()-t:.2f} s after n4 was started again")
    for x in nodes[:3]: x.kill()

def refill(n):
    nodes = cluster(3, [])
    bench([f"http://{x.http}" for x in nodes], n)
    time.sleep(1)
    base = [x.cluster()["antientropy"] for x in nodes[:2]]
    nodes[2].kill(); shutil.rmtree(nodes[2].dir)
    time.sleep(10.5)
    nodes[2].start(); t = time.time()
    wait("held", lambda: nodes[2].cluster()["antientropy"]["keys_held"] >= n and nodes[2].cluster()["antientropy"]["trees_built"])
    took = time.time() - t
    after = [x.cluster()["antientropy"] for x in nodes[:2]]
    sent = sum(a["message_bytes"] - b["message_bytes"] for a, b in zip(after, base))
    live = sum(a["bytes_sent"] - b["bytes_sent"] for a, b in zip(after, base))
    own = nodes[2].cluster()["antientropy"]["message_bytes"]
    print(f"refill: {n} keys back on the wiped node {took:.1f} s after its start (incl. rejoin); "
          f"peers sent {sent} message bytes ({live} live object bytes), it sent {own}")
    for x in nodes: x.kill()

def diverge(n, percent):
    nodes = cluster(3, [])
    bench([f"http://{x.http}" for x in nodes], n)
    time.sleep(2)
    nodes[2].kill()
    m = n * percent // 100
    subprocess.run([BIN, "bench", "--urls", ",".join(f"http://{x.http}" for x in nodes[:2]), "--table", "bench",
                    "--workload", "w", "--clients", "8", "--ops", str(m), "--keys", str(n), "--no-load", "--seed", "7"],
                   check=True, stdout=subprocess.DEVNULL)
    time.sleep(1)
    tot = lambda: [x.cluster()["antientropy"] for x in nodes]
    base = [x.cluster()["antientropy"] for x in nodes[:2]]
    nodes[2].start(); t = time.time()
    wait("repaired", lambda: all(d["divergent"] == 0 for d in tot()) and nodes[2].cluster()["antientropy"]["keys_repaired"] > 0 and time.time() - t > 35)
    all3 = tot()
    sent = sum(a["message_bytes"] - b["message_bytes"] for a, b in zip(all3[:2], base)) + all3[2]["message_bytes"]
    print(f"diverge: {m} of {n} keys missed by n3; repaired {all3[2]['keys_repaired']} keys; "
          f"all three nodes sent {sent} anti-entropy message bytes; n3 bytes_sent {all3[2]['bytes_sent']}")
    for x in nodes: x.kill()

def reap(n):
    # The least grace serve accepts with a 1 s request timeout.
    nodes = cluster(3, ["--request-timeout-ms", "1000", "--tombstone-grace-ms", "3000"])
    urls = [f"http://{x.http}" for x in nodes]
    bench(urls, n)
    import http.client
    conn = http.client.HTTPConnection(nodes[0].http, timeout=10)
    t = time.time()
    for i in range(n):
        # cairn bench's sequential keys
        conn.request("DELETE", f"/tables/bench/keys/k{i}")
        r = conn.getresponse(); r.read()
        if r.status != 204: raise SystemExit(f"delete k{i}: {r.status}")
    deleted = time.time()
    pend = lambda: sum(x.cluster()["tombstones_pending"] for x in nodes)
    print(f"reap: {n} deletes in {deleted-t:.1f} s; {pend()} tombstones pending")
    wait("collected", lambda: pend() == 0)
    coll = sum(x.cluster()["tombstones"]["collected"] for x in nodes)
    print(f"reap: every tombstone collected {time.time()-deleted:.2f} s after the last delete "
          f"(grace 3 s); {coll} copies removed")
    for x in nodes: x.kill()

if __name__ == "__main__":
    {"handoff": lambda: handoff(int(sys.argv[2])), "refill": lambda: refill(int(sys.argv[2])),
     "diverge": lambda: diverge(int(sys.argv[2]), int(sys.argv[3])),
     "reap": lambda: reap(int(sys.argv[2]))}[sys.argv[1]]()
