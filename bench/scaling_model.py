#!/usr/bin/env python3
"""Capacity model for 1M hub sessions, fed by measured numbers (docs/scaling-to-1m.md).

Reads the raw per-run JSON lines that bench/cluster-sessions.sh and bench/cluster-throughput.sh
append to their reports, takes the median over the repetitions of each input, prints every input
with the file it came from, then the model: what N sessions need (instances, memory, Redis,
network) and which component saturates first, for the present design and with the design changes
of docs/scaling-to-1m.md.

    bench/scaling_model.py [--sessions 1000000] [--cores-per-instance 4] [--fanout-budget-s 1]
        [--sessions-md bench/results/2026-11-28-100k-sessions.md]
        [--throughput-md bench/results/2026-11-28-cluster-throughput.md]

Nothing here is a guess except the deployment choices passed as options (cores per instance,
fan-out time budget, broadcast rate, reconnect window, NIC speed), which are printed with the
results. Standard library only.
"""

import argparse
import json
import math
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def runs(md_path):
    """The JSON objects of the report's raw per-run block (lines starting with '{')."""
    out = []
    with open(md_path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("{") and line.endswith("}"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    if not out:
        sys.exit(f"no per-run JSON found in {md_path}")
    return out


def med(rows, key, where):
    vals = []
    for r in rows:
        if all(r.get(k) == v for k, v in where.items()):
            v = r
            for part in key.split("."):
                v = v.get(part) if isinstance(v, dict) else None
            if isinstance(v, (int, float)):
                vals.append(float(v))
    if not vals:
        sys.exit(f"no value for {key} where {where}")
    return statistics.median(vals), len(vals)


class Inputs:
    def __init__(self):
        self.items = []  # (name, value, unit, source)

    def add(self, name, value, unit, source):
        self.items.append((name, value, unit, source))
        return value

    def show(self):
        print("## Measured inputs (medians over the repetitions)\n")
        print("| input | value | source |")
        print("|---|---:|---|")
        for name, value, unit, source in self.items:
            print(f"| {name} | {value:,.2f} {unit} | {source} |")
        print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=1_000_000)
    ap.add_argument("--sessions-md", default=os.path.join(ROOT, "bench/results/2026-11-28-100k-sessions.md"))
    ap.add_argument("--throughput-md", default=os.path.join(ROOT, "bench/results/2026-11-28-cluster-throughput.md"))
    ap.add_argument("--cores-per-instance", type=int, default=4,
                    help="event-loop threads (cores) per gateway instance in the deployment")
    ap.add_argument("--fanout-budget-s", type=float, default=1.0,
                    help="time in which one broadcast must reach every session")
    ap.add_argument("--broadcasts-per-s", type=float, default=1.0,
                    help="sustained broadcast rate for the bandwidth and CPU share")
    ap.add_argument("--reconnect-window-s", type=float, default=60.0,
                    help="time in which every session reconnects after a fleet-wide outage")
    ap.add_argument("--nic-gbit", type=float, default=10.0, help="NIC speed per instance")
    ap.add_argument("--mem-gb", type=float, default=16.0, help="memory per instance")
    ap.add_argument("--nofile", type=int, default=65536,
                    help="open-files limit per instance (deploy/systemd/conduit.service: LimitNOFILE=65536)")
    ap.add_argument("--targeted-per-session-s", type=float, default=0.1,
                    help="messages to one connection/user (task events, replies) per session per s")
    ap.add_argument("--cpu-headroom", type=float, default=0.5,
                    help="share of a core kept free (target utilisation = 1 - headroom)")
    a = ap.parse_args()

    rel_s = os.path.relpath(a.sessions_md, ROOT)
    rel_t = os.path.relpath(a.throughput_md, ROOT)
    cs = runs(a.sessions_md)
    ct = runs(a.throughput_md) if os.path.exists(a.throughput_md) else []
    cl = {"scenario": "cluster"}
    one = {"scenario": "one"}
    ref = {"scenario": "ref"}
    src_c = f"{rel_s}, scenario `cluster` (`bench/cluster-sessions.sh`)"
    src_1 = f"{rel_s}, scenario `one`"
    src_r = f"{rel_s}, scenario `ref`"
    I = Inputs()

    n_meas, reps = med(cs, "connected", cl)
    I.add("sessions measured (cluster)", n_meas, "", src_c)
    inst_meas, _ = med(cs, "servers", cl)
    I.add("instances measured", inst_meas, "", src_c)
    rss_sess = I.add("gateway RSS per session", med(cs, "per_session_bytes", cl)[0], "B", src_c)
    rss_base = I.add("gateway RSS per instance, no session", med(cs, "rss_before_kb", cl)[0] / inst_meas / 1024, "MB", src_c)
    slab_sess = I.add("kernel slab per session, both loopback ends", med(cs, "slab_bytes_per_session", cl)[0], "B", src_c)
    r_mem = I.add("Redis used_memory per session (its connection channel)", med(cs, "redis_bytes_per_session", cl)[0], "B", src_c)
    r_rss = I.add("Redis RSS per session", med(cs, "redis_rss_bytes_per_session", cl)[0], "B", src_c)
    r_sub = I.add("Redis SUBSCRIBE wall time per session (commandstats; includes waiting for the CPU on this shared box)", med(cs, "redis_subscribe_us_per_session", cl)[0], "µs", src_c)
    r_conn = I.add("Redis CPU per session connect (all commands)", med(cs, "redis_cpu_connect_us_per_session", cl)[0], "µs", src_c)
    g_conn = I.add("gateway CPU per session connect", med(cs, "server_cpu_connect_us_per_session", cl)[0], "µs", src_c)
    g_idle = I.add("gateway idle CPU per session (keep-alive)", med(cs, "server_idle_us_per_session_s", cl)[0], "µs/s", src_c)
    g_del = I.add("gateway CPU per delivered message (broadcast phase; no keep-alive pings then)", med(cs, "server_cpu_us_per_delivery", cl)[0], "µs", src_c)
    g_del_one = I.add("… 10K sessions on 1 instance, same run", med(cs, "server_cpu_us_per_delivery", one)[0], "µs", src_1)
    ref_del = I.add("reference server (bare epoll + send of one prebuilt frame) per delivery", med(cs, "server_cpu_us_per_delivery", ref)[0], "µs", src_r)
    lg_del = I.add("load generator CPU per received message (the clients' side)", med(cs, "lg_cpu_us_per_message", cl)[0], "µs", src_c)
    lat50 = I.add("fan-out p50, 100K sessions", med(cs, "lat_p50_ms", cl)[0], "ms", src_c)
    lat99 = I.add("fan-out p99, 100K sessions", med(cs, "lat_p99_ms", cl)[0], "ms", src_c)
    last = I.add("last delivery of a broadcast, 100K (median over broadcasts)", med(cs, "bcast_max_median_ms", cl)[0], "ms", src_c)
    pub = []
    for r in cs:
        if r.get("scenario") == "cluster" and r.get("redis_publish_calls"):
            pub.append(r["redis_publish_usec"] / r["redis_publish_calls"])
    r_pub = I.add(f"Redis time per PUBLISH to {inst_meas:.0f} subscriber connections (commandstats)", statistics.median(pub), "µs", src_c)
    rp = {r["pipeline"]: r for r in cs if r.get("probe") == "redis_pubsub"}
    t_pub1 = t_pub16 = None
    if rp:
        src_p = f"{rel_s}, Redis pub/sub probe (`bench/redis_pubsub_cost.sh`)"
        if 1 in rp:
            t_pub1 = I.add(f"Redis CPU per targeted PUBLISH, {rp[1]['channels']:,} channels, not pipelined", rp[1]["targeted_us_per_publish"], "µs", src_p)
            I.add(f"Redis CPU per broadcast PUBLISH to {rp[1]['subscriber_connections']} subscribers, not pipelined", rp[1]["broadcast_us_per_publish"], "µs", src_p)
            I.add("… per subscribing instance (copy)", rp[1]["broadcast_us_per_copy"], "µs", src_p)
        if 16 in rp:
            t_pub16 = I.add("Redis CPU per targeted PUBLISH, pipelined 16", rp[16]["targeted_us_per_publish"], "µs", src_p)
    frame = [r for r in cs if r.get("probe") == "frame"]
    wire = ack = None
    if frame:
        src_f = f"{rel_s}, frame probe (`bench/hub_frame_probe.py`)"
        I.add("WebSocket frame of the benchmark's SystemAnnouncement", frame[0]["frame_bytes"], "B", src_f)
        wire = I.add("… on Ethernet per delivery (+ TCP/IPv4 52 B + Ethernet 14 B)", frame[0]["wire_bytes_per_delivery"], "B", src_f)
        ack = frame[0]["ack_bytes"]
    ports = [r for r in cs if r.get("probe") == "ports"]
    per_dest = None
    if ports:
        per_dest = I.add("connections per (source IP → destination IP:port) before connect() slows down", ports[0]["stall_at_per_destination"], "", f"{rel_s}, first attempt")
    if ct:
        src_t = f"{rel_t} (`bench/cluster-throughput.sh`)"
        req_c = I.add("Conduit CPU per chat request (1 instance direct)", med(ct, "cpu_us_per_req.conduit", {"target": "direct1"})[0], "µs", src_t)
        req_c3 = I.add("Conduit CPU per chat request (nginx → 3 instances, all 3)", med(ct, "cpu_us_per_req.conduit", {"target": "nginx3"})[0], "µs", src_t)
        req_n = I.add("nginx CPU per chat request (nginx → 3 instances)", med(ct, "cpu_us_per_req.nginx", {"target": "nginx3"})[0], "µs", src_t)
        req_r = I.add("Redis CPU per chat request (nginx → 3 instances)", med(ct, "cpu_us_per_req.redis", {"target": "nginx3"})[0], "µs", src_t)
        rps1 = I.add("chat req/s, 1 instance direct", med(ct, "rps", {"target": "direct1"})[0], "req/s", src_t)
        rps3 = I.add("chat req/s, nginx → 3 instances", med(ct, "rps", {"target": "nginx3"})[0], "req/s", src_t)
    I.show()

    N = a.sessions
    util = 1.0 - a.cpu_headroom
    cores = a.cores_per_instance
    print(f"## Model for {N:,} sessions\n")
    print(f"Deployment choices (options, not measurements): {cores} cores per gateway instance, "
          f"a broadcast must reach every session within {a.fanout_budget_s:g} s, "
          f"{a.broadcasts_per_s:g} broadcast(s)/s sustained, every session reconnects within "
          f"{a.reconnect_window_s:g} s after an outage, {a.nic_gbit:g} Gbit/s NIC, {a.mem_gb:g} GB and {a.nofile:,} open files per instance, "
          f"CPU planned at {util:.0%} utilisation, {a.targeted_per_session_s:g} targeted message(s) "
          f"(to one connection or user) per session per s.\n")

    # Per-instance session limits, each from one resource.
    limits = {}
    # CPU: one broadcast to the instance's sessions within the budget on its cores. During
    # broadcasts the keep-alive pings stop (a connection is pinged only after 15 s without
    # traffic), so the measured per-delivery CPU is the whole cost.
    limits[f"CPU: one broadcast within {a.fanout_budget_s:g} s"] = a.fanout_budget_s * util * cores * 1e6 / g_del
    limits[f"CPU: {a.broadcasts_per_s:g} broadcast/s sustained"] = util * cores * 1e6 / (g_del * a.broadcasts_per_s)
    limits["CPU: keep-alives alone (no broadcast)"] = util * cores * 1e6 / g_idle
    per_sess_mem = rss_sess + slab_sess / 2
    limits[f"memory: {a.mem_gb:g} GB, 75 % for sessions (RSS + half the two-ended slab)"] = \
        (a.mem_gb * 0.75 * 1024**3 - rss_base * 1024**2) / per_sess_mem
    limits[f"open files: {a.nofile:,} per process, 512 kept for the rest"] = a.nofile - 512
    if wire:
        limits[f"NIC: {a.nic_gbit:g} Gbit/s at 70 %, {a.broadcasts_per_s:g} broadcast/s"] = \
            a.nic_gbit * 1e9 / 8 * 0.7 / (wire * a.broadcasts_per_s)
    per_inst = min(limits.values())
    bound = min(limits, key=limits.get)
    instances = math.ceil(N / per_inst)

    print("### Sessions one instance can hold, by resource\n")
    print("| limit | sessions per instance |")
    print("|---|---:|")
    for k, v in sorted(limits.items(), key=lambda kv: kv[1]):
        print(f"| {k} | {v:,.0f} |")
    print(f"\n→ **{instances} gateway instances** of {cores} cores ({N / instances:,.0f} sessions each; "
          f"bound by {bound}).\n")

    gw_mem = N * rss_sess / 1e9 + instances * rss_base / 1024
    k_mem = N * slab_sess / 2 / 1e9
    print("### Fleet totals\n")
    print("| quantity | value | from |")
    print("|---|---:|---|")
    print(f"| gateway RSS | {gw_mem:,.1f} GB | {N:,} × {rss_sess:,.0f} B + {instances} × {rss_base:,.1f} MB |")
    print(f"| kernel socket state, gateway side | {k_mem:,.1f} GB | {N:,} × {slab_sess / 2:,.0f} B (half the two-ended loopback slab) |")
    print(f"| CPU for one broadcast to all | {N * g_del / 1e6:,.1f} core-s | {N:,} × {g_del:.2f} µs |")
    print(f"| … of which a bare epoll+send server also pays | {N * ref_del / 1e6:,.1f} core-s | {N:,} × {ref_del:.2f} µs |")
    print(f"| keep-alive CPU when idle | {N * g_idle / 1e6:,.2f} cores | {N:,} × {g_idle:.2f} µs/s |")
    print(f"| reconnect storm, gateways | {N * g_conn / 1e6:,.0f} core-s = {N * g_conn / 1e6 / a.reconnect_window_s:,.1f} cores for {a.reconnect_window_s:g} s | {N:,} × {g_conn:.0f} µs |")
    if wire:
        gbit = N * wire * 8 / 1e9
        print(f"| bytes on the wire per broadcast | {N * wire / 1e6:,.0f} MB = {gbit:,.2f} Gbit ({gbit * a.broadcasts_per_s / instances:,.2f} Gbit/s per instance at {a.broadcasts_per_s:g}/s) + {N * ack / 1e6:,.0f} MB of ACKs back | {N:,} × {wire:.0f} B |")
    print()

    # Redis in the present design.
    r_storm_s = N * r_conn / 1e6
    targeted = N * a.targeted_per_session_s
    print("### Redis, present design\n")
    print("| quantity | value | from |")
    print("|---|---:|---|")
    print(f"| channels | {N:,} + a few per instance | one SUBSCRIBE per hub connection (its connection channel) |")
    print(f"| used_memory for them | {N * r_mem / 1e9:,.2f} GB (RSS {N * r_rss / 1e9:,.2f} GB) | {N:,} × {r_mem:,.0f} B |")
    print(f"| its one thread during a full reconnect | {r_storm_s:,.1f} s of CPU = {r_storm_s / a.reconnect_window_s:.0%} of the core for {a.reconnect_window_s:g} s | {N:,} × {r_conn:.1f} µs |")
    print(f"| one broadcast | 1 PUBLISH ≈ {r_pub:.0f} µs to {inst_meas:.0f} instances | commandstats |")
    if t_pub1:
        print(f"| targeted messages | {targeted:,.0f} PUBLISH/s = {targeted * t_pub16 / 1e6:.0%} (pipelined) to {targeted * t_pub1 / 1e6:.0%} (one per write) of its core | {N:,} × {a.targeted_per_session_s:g}/s × {t_pub16:.1f}–{t_pub1:.1f} µs |")
    print()
    if t_pub1:
        sh1 = math.ceil(targeted * t_pub1 / 1e6 / util)
        sh16 = math.ceil(targeted * t_pub16 / 1e6 / util)
        print(f"Redis shards for the targeted traffic at {util:.0%} of a core each: **{sh1}** one PUBLISH per "
              f"write, **{sh16}** pipelined — with sharded pub/sub only (below). Memory needs 1 "
              f"({N * r_rss / 1e9:,.2f} GB).\n")
    print("Plain PUBLISH/SUBSCRIBE is broadcast to every node of a Redis Cluster: adding shards does "
          "not divide pub/sub work. Only sharded pub/sub (SSUBSCRIBE/SPUBLISH, Redis ≥ 7) does; with it "
          f"the connection channels spread over k shards ({N:,}/k channels each).\n")

    # What saturates first.
    print("### What saturates first (load ÷ capacity at the instance count above)\n")
    ratios = {
        f"gateway CPU, one broadcast to all within {a.fanout_budget_s:g} s": N * g_del / 1e6 / (instances * cores * a.fanout_budget_s * util),
        f"gateway memory ({a.mem_gb:g} GB instances, 75 %)": N * per_sess_mem / (instances * a.mem_gb * 0.75 * 1024**3),
        f"Redis thread, reconnect of all in {a.reconnect_window_s:g} s": r_storm_s / (a.reconnect_window_s * util),
        f"Redis thread, {a.targeted_per_session_s:g} targeted msg/session/s (not pipelined)": targeted * (t_pub1 or r_pub) / 1e6 / util,
    }
    if wire:
        ratios[f"instance NIC at {a.broadcasts_per_s:g} broadcast/s"] = N * wire * 8 * a.broadcasts_per_s / instances / (a.nic_gbit * 1e9 * 0.7)
    if per_dest:
        ratios[f"load-balancer upstream ports: one nginx IP → {instances} instance ports"] = N / (instances * per_dest)
    print("| component | load ÷ planned capacity |")
    print("|---|---:|")
    for k, v in sorted(ratios.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.2f} |")
    print()
    if per_dest:
        print(f"A proxy in front of the WebSockets opens one upstream connection per session: from one source "
              f"address it needs ≥ {math.ceil(N / per_dest)} destination IP:port pairs (or source addresses) for "
              f"{N:,} sessions at ≤ {per_dest:,.0f} per pair.\n")
    if ct:
        print("### Chat requests on the same fleet\n")
        print(f"Per request: Conduit {req_c:.0f} µs (direct) / {req_c3:.0f} µs (behind nginx, 3 instances), "
              f"nginx {req_n:.0f} µs, Redis {req_r:.0f} µs of CPU. The {instances} × {cores} cores at {util:.0%} "
              f"serve {instances * cores * util * 1e6 / req_c3:,.0f} req/s; nginx needs one core per "
              f"{util * 1e6 / req_n:,.0f} req/s; one Redis thread at {util:.0%} caps the fleet at "
              f"{util * 1e6 / req_r:,.0f} req/s (its per-request counters). Measured on this 2-core box: "
              f"{rps1:,.0f} req/s direct, {rps3:,.0f} req/s through nginx → 3 instances.\n")


if __name__ == "__main__":
    main()
