#!/usr/bin/env python3
"""Checks the deployment artefacts in deploy/ (and docs/operations.md) against the real binary.

Run through scripts/check-deploy.sh. Prints one line per check ("ok", "FAIL", "skip") and exits 1
when any check failed. What it checks:

  names    every CONDUIT_* / alias environment name and every `conduit serve` flag used in deploy/
           and docs/operations.md is one the binary accepts (`conduit serve --help`) and one the
           sources declare (src/config/loader.cpp)
  values   the gateway starts with the settings of the systemd environment file, of the compose
           gateways and of the Kubernetes ConfigMap + Secret (embedded mode: engine URLs removed),
           answers /health/live and /health/ready with 200, and exits 0 on SIGTERM in time; with
           the test engines up (CONDUIT_TEST_PG, CONDUIT_TEST_REDIS, CONDUIT_TEST_AMQP) the
           systemd file's distributed settings are started against them too
  files    compose and Kubernetes YAML parses; ports, health paths, volume paths, selectors and
           references agree; the drain timing (stop timeouts vs CONDUIT_SHUTDOWN_GRACE_MS);
           PostgreSQL pool sizes vs max_connections; the Dockerfile installs every shared
           library the binary needs; systemd-analyze verify (when present); the nginx template
           rendered for the compose gateways passes `nginx -t`
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
OPS_DOC = os.path.join(ROOT, "docs", "operations.md")

FAILS = []

# Environment names that select an engine: removed for the embedded-mode trials.
ENGINE_NAMES = {
    "CONDUIT_DATABASE_URL", "DATABASE_URL", "CONDUIT_REDIS_URL", "REDIS_URL",
    "CONDUIT_RABBITMQ_HOST", "CONDUITLLM__RABBITMQ__HOST",
}
# Packages of the shared libraries every Debian image has.
BASE_PACKAGES = {"libc6", "libstdc++6", "libgcc-s1"}
PG_RESERVED = 3  # superuser_reserved_connections default
PG_DEFAULT_MAX = 100  # max_connections default, for engines not defined here


def ok(msg):
    print(f"ok    {msg}", flush=True)


def fail(msg):
    print(f"FAIL  {msg}", flush=True)
    FAILS.append(msg)


def skip(msg):
    print(f"skip  {msg}", flush=True)


def rel(path):
    return os.path.relpath(path, ROOT)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# ---------------------------------------------------------------------------------------------
# What the binary and the sources accept
# ---------------------------------------------------------------------------------------------

class Options:
    def __init__(self, binary):
        out = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True,
                             timeout=30, check=False)
        if out.returncode != 0:
            raise SystemExit(f"FAIL  {binary} serve --help exited {out.returncode}")
        self.flags = {}  # flag -> {"envs": [...], "default": str|None, "file": str|None}
        self.envs = {}  # env name -> flag
        pattern = re.compile(
            r"^\s+(--[a-z0-9-]+)(?: (?:TEXT|INT)(?:=(\S+))?)?(.*?)\[env ([^;\]]+)(?:; file ([a-z_.]+))?\]",
            re.M | re.S)
        for m in pattern.finditer(out.stdout):
            flag, default, _, envs, key = m.groups()
            names = [e.strip() for e in envs.split(",")]
            self.flags[flag] = {"envs": names, "default": default, "file": key}
            for n in names:
                self.envs[n] = flag
        if "--help" in out.stdout:
            self.flags["--help"] = {"envs": [], "default": None, "file": None}
        loader = read(os.path.join(ROOT, "src", "config", "loader.cpp"))
        self.source_envs = set(re.findall(r'"((?:CONDUIT|DATABASE_URL|REDIS_URL)[A-Z0-9_]*)"', loader))
        self.source_flags = set(re.findall(r'"(--[a-z0-9-]+)"', loader)) | {"--help"}

    def default(self, env_name):
        flag = self.envs.get(env_name)
        return self.flags[flag]["default"] if flag else None


def check_names(opts, used_envs, used_flags):
    """used_*: name -> set of places."""
    if not opts.flags:
        fail("could not parse any option from `conduit serve --help`")
        return
    missing_src = sorted(set(opts.envs) - opts.source_envs)
    if missing_src:
        print(f"note  the binary knows names src/config/loader.cpp does not: {missing_src} "
              "(binary built from other sources?)")
    for name, places in sorted(used_envs.items()):
        where = ", ".join(sorted(places))
        if name.endswith("_"):  # a prefix such as CONDUIT_BREAKER_ in prose
            if any(e.startswith(name) for e in opts.envs):
                continue
            fail(f"environment prefix {name}* matches no setting ({where})")
        elif name not in opts.envs:
            fail(f"environment name {name} is not accepted by the binary ({where})")
        elif name not in opts.source_envs:
            fail(f"environment name {name} is not declared in src/config/loader.cpp ({where})")
    for flag, places in sorted(used_flags.items()):
        where = ", ".join(sorted(places))
        if flag not in opts.flags:
            fail(f"flag {flag} is not accepted by `conduit serve` ({where})")
        elif flag not in opts.source_flags:
            fail(f"flag {flag} is not declared in src/config/loader.cpp ({where})")
    ok(f"{len(used_envs)} environment names and {len(used_flags)} flags used in deploy/ and "
       f"docs/operations.md are accepted by the binary ({len(opts.envs)} names, "
       f"{len(opts.flags)} flags known)")


ENV_RE = re.compile(r"(?<![A-Za-z0-9_])(CONDUITLLM__[A-Z_]+|CONDUIT_[A-Z0-9_]+|DATABASE_URL|REDIS_URL)")


def scan_env_names(path, used):
    for name in ENV_RE.findall(read(path)):
        used.setdefault(name, set()).add(rel(path))


def add_flags(tokens, place, used):
    for t in tokens:
        m = re.match(r"^(--[a-z][a-z0-9-]*)", t)
        if m:
            used.setdefault(m.group(1), set()).add(place)


# ---------------------------------------------------------------------------------------------
# Running the gateway
# ---------------------------------------------------------------------------------------------

def http_get(port, path, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def trial(binary, label, env, health_paths, stop_budget_s, expect=None, metrics_used=None,
          start_timeout_s=30, restarts=0):
    """Starts `conduit serve` with `env` (plus --listen/--data-dir overrides), checks health and a
    clean SIGTERM exit. `expect`: {check name: substring of its description}."""
    tmp = tempfile.mkdtemp(prefix="conduit-deploy-check-")
    fails_before = len(FAILS)
    try:
        run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp}
        run_env.update(env)
        if "CONDUIT_MEDIA_DIR" in run_env:
            run_env["CONDUIT_MEDIA_DIR"] = os.path.join(tmp, "media")
        if "CONDUIT_DATA_DIR" in run_env:
            run_env["CONDUIT_DATA_DIR"] = os.path.join(tmp, "data")
        args = [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", os.path.join(tmp, "data")]
        log_path = os.path.join(tmp, "conduit.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(args, env=run_env, stdout=log, stderr=subprocess.STDOUT)
        port = None
        deadline = time.monotonic() + start_timeout_s
        while time.monotonic() < deadline and port is None:
            if proc.poll() is not None:
                break
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", read(log_path))
            if m:
                port = int(m.group(1))
                break
            time.sleep(0.05)
        if port is None:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            tail = read(log_path).strip().splitlines()[-5:]
            if restarts > 0 and proc.returncode == 1:
                # What systemd (Restart=on-failure) and Kubernetes do: start it again. The first
                # start on an empty RabbitMQ vhost declares 2 x partitions quorum queues, which
                # a slow broker may not finish within the gateway's start-up wait.
                print(f"note  {label}: start-up failed (exit 1), restarting once: {tail[-1:]}")
                shutil.rmtree(tmp, ignore_errors=True)
                return trial(binary, label, env, health_paths, stop_budget_s, expect,
                             metrics_used, start_timeout_s, restarts - 1)
            fail(f"{label}: the gateway did not start (exit {proc.returncode}): "
                 + " | ".join(tail))
            return None
        report = {}
        for path in health_paths:
            status, body = http_get(port, path)
            if status != 200:
                fail(f"{label}: GET {path} answered {status}: {body[:300]}")
                continue
            try:
                doc = json.loads(body)
            except ValueError:
                fail(f"{label}: GET {path} is not JSON: {body[:200]}")
                continue
            report[path] = doc
        ready = report.get("/health/ready")
        if ready is not None:
            checks = {c["name"]: c for c in ready.get("checks", [])}
            bad = [f"{n}={c['status']} ({c['description']})" for n, c in checks.items()
                   if c["status"] != "Healthy"]
            if bad:
                fail(f"{label}: /health/ready not Healthy: {'; '.join(bad)}")
            for name, want in (expect or {}).items():
                got = checks.get(name)
                if got is None or want not in got.get("description", ""):
                    fail(f"{label}: readiness check {name} should mention '{want}', got "
                         f"{got and got.get('description')}")
        metrics = set()
        status, body = http_get(port, "/metrics")
        if status == 200:
            metrics = set(re.findall(r"^# TYPE (\S+) ", body, re.M))
        else:
            fail(f"{label}: GET /metrics answered {status}")
        report["metrics"] = metrics
        for name, places in sorted((metrics_used or {}).items()):
            if name not in metrics:
                fail(f"{label}: metric {name} ({', '.join(sorted(places))}) is not exported")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=stop_budget_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            fail(f"{label}: still running {stop_budget_s} s after SIGTERM")
            return report
        took = time.monotonic() - started
        if rc != 0:
            fail(f"{label}: exit status {rc} after SIGTERM")
            return report
        if len(FAILS) > fails_before:
            return report
        shown = [c for c in (ready or {}).get("checks", []) if c["name"] in (expect or {})]
        desc = "; ".join(f"{c['name']}: {c['description']}" for c in shown) or "no engine checks"
        ok(f"{label}: started, {' and '.join(health_paths)} answered 200 "
           f"(ready: {ready and ready.get('status')}; {desc}), SIGTERM → exit 0 in {took:.2f} s "
           f"(budget {stop_budget_s} s)")
        return report
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def embedded(env):
    return {k: v for k, v in env.items() if k not in ENGINE_NAMES}


# ---------------------------------------------------------------------------------------------
# systemd
# ---------------------------------------------------------------------------------------------

def parse_unit(path):
    sections = {}
    current = None
    for line in read(path).splitlines():
        s = line.strip()
        if not s or s.startswith("#") or s.startswith(";"):
            continue
        if s.startswith("[") and s.endswith("]"):
            current = s[1:-1]
            sections.setdefault(current, [])
            continue
        key, _, value = s.partition("=")
        sections.setdefault(current, []).append((key.strip(), value.strip()))
    return sections


def parse_env_file(path):
    active, commented = {}, {}
    for line in read(path).splitlines():
        m = re.match(r"^(#?)\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if not m:
            continue
        (commented if m.group(1) else active)[m.group(2)] = m.group(3)
    return active, commented


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|min)?", str(text).strip())
    if not m:
        return None
    n = int(m.group(1))
    return {"ms": n / 1000, "s": n, None: n, "m": n * 60, "min": n * 60}[m.group(2)]


def check_systemd(binary, opts, used_flags, distributed):
    unit_dir = os.path.join(DEPLOY, "systemd")
    env_path = os.path.join(unit_dir, "conduit.env.example")
    active, commented = parse_env_file(env_path)
    grace_ms = int(active.get("CONDUIT_SHUTDOWN_GRACE_MS") or opts.default("CONDUIT_SHUTDOWN_GRACE_MS"))
    units = {}
    for name in ("conduit.service", "conduit@.service"):
        path = os.path.join(unit_dir, name)
        units[name] = parse_unit(path)
        svc = dict(units[name].get("Service", []))
        exec_start = svc.get("ExecStart", "")
        tokens = exec_start.split()
        if len(tokens) < 2 or tokens[1] != "serve":
            fail(f"{name}: ExecStart must run `conduit serve` (got '{exec_start}')")
        add_flags(tokens, f"deploy/systemd/{name}", used_flags)
        stop = seconds(svc.get("TimeoutStopSec", "90"))
        if stop is None or stop < grace_ms / 1000 + 10:
            fail(f"{name}: TimeoutStopSec={svc.get('TimeoutStopSec')} is below "
                 f"CONDUIT_SHUTDOWN_GRACE_MS ({grace_ms} ms) + 10 s")
        nofile = int(svc.get("LimitNOFILE", "0").split(":")[-1])
        if nofile < 20000:
            fail(f"{name}: LimitNOFILE={nofile} is below 20000 (10,000 SSE/long-polling sessions)")
        envfiles = [v for k, v in units[name]["Service"] if k == "EnvironmentFile"]
        if "/etc/conduit/conduit.env" not in envfiles:
            fail(f"{name}: EnvironmentFile=/etc/conduit/conduit.env missing")
        ok(f"{name}: ExecStart runs `conduit serve`, TimeoutStopSec={svc.get('TimeoutStopSec')} "
           f"≥ grace {grace_ms / 1000:g} s + 10 s, LimitNOFILE={nofile}")
    # The template differs from the single unit only where the instance name goes.
    allowed = {"Description", "ExecStart", "EnvironmentFile", "StateDirectory", "WorkingDirectory"}
    single = [(k, v) for k, v in units["conduit.service"]["Service"] if k not in allowed]
    templ = [(k, v) for k, v in units["conduit@.service"]["Service"] if k not in allowed]
    if single != templ:
        diff = set(single) ^ set(templ)
        fail(f"conduit.service and conduit@.service differ beyond the instance settings: {sorted(diff)}")
    else:
        ok(f"conduit@.service has the same {len(single)} service settings as conduit.service "
           "(hardening, limits, restart, stop)")
    listen = active.get("CONDUIT_LISTEN", "")
    if not re.fullmatch(r"[^:\s]+:\d+", listen):
        fail(f"conduit.env.example: CONDUIT_LISTEN '{listen}' is not host:port")

    analyze = shutil.which("systemd-analyze")
    if analyze:
        tmp = tempfile.mkdtemp(prefix="conduit-units-")
        try:
            for name in ("conduit.service", "conduit@.service"):
                text = read(os.path.join(unit_dir, name))
                text = text.replace("/usr/local/bin/conduit", os.path.abspath(binary))
                text = text.replace("EnvironmentFile=/etc/conduit/conduit.env", f"EnvironmentFile={env_path}")
                target = os.path.join(tmp, name.replace("@.", "@5001."))
                with open(target, "w", encoding="utf-8") as f:
                    f.write(text)
                v = subprocess.run([analyze, "verify", target], capture_output=True, text=True,
                                   timeout=60, check=False)
                msgs = [m for m in (v.stderr + v.stdout).splitlines() if m.strip()]
                if v.returncode != 0 or msgs:
                    fail(f"systemd-analyze verify {name}: {' | '.join(msgs) or v.returncode}")
                    continue
                s = subprocess.run([analyze, "security", "--offline=true", "--no-pager", target],
                                   capture_output=True, text=True, timeout=60, check=False)
                m = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\S+)", s.stdout + s.stderr)
                level = m.group(1) + " " + m.group(2) if m else "?"
                if not m or float(m.group(1)) > 2.0:
                    fail(f"systemd-analyze security {name}: exposure {level} (want ≤ 2.0)")
                else:
                    ok(f"systemd-analyze verify {name}: no warnings; security exposure {level}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        skip("systemd-analyze not installed: unit files not verified by systemd")

    trial(binary, "systemd env file (embedded mode)", embedded(active),
          ["/health/live", "/health/ready"], seconds(
              dict(units["conduit.service"]["Service"]).get("TimeoutStopSec")),
          expect={"store": "sqlite", "work_queue": "embedded"})
    if distributed:
        return distributed_trial(binary, active, commented)
    else:
        skip("distributed-mode trial of the systemd env file: CONDUIT_TEST_PG and "
             "CONDUIT_TEST_REDIS not set (scripts/engines.sh)")


def rabbitmqctl(args):
    prefix = os.environ.get("CONDUIT_RABBITMQCTL")
    if prefix:
        cmd = prefix.split()
    else:
        cmd = ["runuser", "-u", "rabbitmq", "--", "env", "HOME=/var/lib/rabbitmq",
               "ERL_EPMD_ADDRESS=127.0.0.1", "/usr/lib/rabbitmq/bin/rabbitmqctl", "-q", "-n",
               os.environ.get("CONDUIT_RABBITMQ_NODE", "conduit@localhost")]
    return subprocess.run(cmd + args, capture_output=True, text=True, timeout=60, check=True)


def distributed_trial(binary, active, commented):
    """The env file with its commented distributed settings enabled, pointed at the test engines
    (a private PostgreSQL database, Redis key prefix and RabbitMQ vhost)."""
    pg = urllib.parse.urlsplit(os.environ["CONDUIT_TEST_PG"])
    redis_url = os.environ["CONDUIT_TEST_REDIS"]
    tag = f"conduit_deploycheck_{os.getpid()}"
    env = dict(active)
    for k in ("CONDUIT_DATABASE_URL", "CONDUIT_REDIS_URL", "CONDUIT_REDIS_PREFIX"):
        if k not in commented:
            fail(f"conduit.env.example: the distributed section lacks {k}")
            return
    db_url = urllib.parse.urlsplit(commented["CONDUIT_DATABASE_URL"])
    if db_url.scheme not in ("postgres", "postgresql"):
        fail(f"conduit.env.example: CONDUIT_DATABASE_URL scheme {db_url.scheme} (want postgresql)")
    if not commented["CONDUIT_REDIS_URL"].startswith("redis://"):
        fail("conduit.env.example: CONDUIT_REDIS_URL must be a redis:// URL")
    psql = shutil.which("psql")
    if not psql:
        skip("distributed-mode trial: psql not installed")
        return
    admin = urllib.parse.urlunsplit(pg)
    try:
        subprocess.run([psql, admin, "-qAtc", f"CREATE DATABASE {tag}"], check=True,
                       capture_output=True, text=True, timeout=60)
    except subprocess.CalledProcessError as e:
        fail(f"distributed-mode trial: cannot create database {tag}: {e.stderr.strip()}")
        return
    try:
        # Keep the example's query (pool_max_conns=...) so it is exercised too.
        env["CONDUIT_DATABASE_URL"] = urllib.parse.urlunsplit(
            (pg.scheme, pg.netloc, "/" + tag, db_url.query, ""))
        env["CONDUIT_REDIS_URL"] = redis_url
        env["CONDUIT_REDIS_PREFIX"] = f"{tag}:"
        expect = {"store": "postgresql", "backplane": "redis", "counters": "redis"}
        amqp = os.environ.get("CONDUIT_TEST_AMQP")
        if not amqp:
            skip("RabbitMQ part of the distributed trial: CONDUIT_TEST_AMQP not set; embedded queue")
        elif "CONDUIT_RABBITMQ_HOST" not in commented:
            fail("conduit.env.example: the distributed section lacks CONDUIT_RABBITMQ_HOST")
        if amqp and "CONDUIT_RABBITMQ_HOST" in commented:
            a = urllib.parse.urlsplit(amqp)
            user = urllib.parse.unquote(a.username or "guest")
            try:
                # One long-lived vhost, created when missing and never deleted: on RabbitMQ 3.10
                # deleting a vhost of quorum queues right after its consumers left has wedged the
                # broker (every later login hung) — see tests/e2e/cluster.mjs.
                vhost_name = os.environ.get("CONDUIT_DEPLOYCHECK_VHOST", "conduit_deploycheck")
                have = rabbitmqctl(["list_vhosts", "--no-table-headers"]).stdout
                if vhost_name not in [line.strip() for line in have.splitlines()]:
                    rabbitmqctl(["add_vhost", vhost_name])
                    rabbitmqctl(["set_permissions", "-p", vhost_name, user, ".*", ".*", ".*"])
                for k in ("CONDUIT_RABBITMQ_PORT", "CONDUIT_RABBITMQ_USERNAME",
                          "CONDUIT_RABBITMQ_PASSWORD", "CONDUIT_RABBITMQ_VHOST",
                          "CONDUIT_RABBITMQ_PARTITION_COUNT"):
                    if k in commented:
                        env[k] = commented[k]
                env["CONDUIT_RABBITMQ_HOST"] = a.hostname
                env["CONDUIT_RABBITMQ_PORT"] = str(a.port or 5672)
                env["CONDUIT_RABBITMQ_USERNAME"] = user
                env["CONDUIT_RABBITMQ_PASSWORD"] = urllib.parse.unquote(a.password or "guest")
                env["CONDUIT_RABBITMQ_VHOST"] = vhost_name
                expect["work_queue"] = "rabbitmq"
            except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired) as e:
                msg = getattr(e, "stderr", "") or str(e)
                skip(f"RabbitMQ part of the distributed trial: no private vhost "
                     f"({str(msg).strip().splitlines()[0] if str(msg).strip() else 'rabbitmqctl failed'}); "
                     "embedded queue instead")
        for k, v in commented.items():
            if k not in env and k not in ENGINE_NAMES and not k.startswith("CONDUIT_RABBITMQ_") \
                    and k != "CONDUIT_MEDIA_DIR":
                env[k] = v
        return trial(binary, "systemd env file, distributed settings on the test engines", env,
                     ["/health/live", "/health/ready"], 30, expect=expect, start_timeout_s=90,
                     restarts=2)
    finally:
        subprocess.run([psql, admin, "-qAtc", f"DROP DATABASE IF EXISTS {tag} WITH (FORCE)"],
                       capture_output=True, text=True, timeout=60, check=False)


# ---------------------------------------------------------------------------------------------
# docker compose + nginx
# ---------------------------------------------------------------------------------------------

def substitute(value):
    """Compose variable interpolation with placeholder values: ${X}, ${X:?msg}, ${X:-default}."""
    def repl(m):
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if op in (":-", "-"):
            return arg
        return f"{name.lower().replace('_', '')}0123456789abcdef"
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:\?|\?|:-|-)([^}]*))?\}", repl, str(value))


def check_compose(binary, opts, used_flags, nginx_bin):
    path = os.path.join(DEPLOY, "docker-compose.yml")
    try:
        doc = yaml.safe_load(read(path))
    except yaml.YAMLError as e:
        fail(f"docker-compose.yml does not parse: {e}")
        return
    services = doc.get("services") or {}
    gateways = {n: s for n, s in services.items()
                if (s.get("build") or {}).get("dockerfile") == "deploy/Dockerfile"}
    if len(gateways) != 3:
        fail(f"docker-compose.yml: expected 3 gateways built from deploy/Dockerfile, found {sorted(gateways)}")
        if not gateways:
            return
    for need in ("postgres", "redis", "rabbitmq", "nginx"):
        if need not in services:
            fail(f"docker-compose.yml: no {need} service")
    envs = {n: {k: substitute(v) for k, v in (s.get("environment") or {}).items()}
            for n, s in gateways.items()}
    first = next(iter(envs.values()))
    if any(e != first for e in envs.values()):
        fail("docker-compose.yml: the gateways' environments differ")
    for n, s in gateways.items():
        cmd = s.get("command") or []
        add_flags(cmd if isinstance(cmd, list) else str(cmd).split(), "deploy/docker-compose.yml", used_flags)
    listen = first.get("CONDUIT_LISTEN", opts.default("CONDUIT_LISTEN"))
    port = listen.rsplit(":", 1)[-1]
    grace_ms = int(first.get("CONDUIT_SHUTDOWN_GRACE_MS") or opts.default("CONDUIT_SHUTDOWN_GRACE_MS"))
    health = set()
    for n, s in gateways.items():
        test = " ".join((s.get("healthcheck") or {}).get("test") or [])
        m = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*)", test)
        if not m or m.group(1) != port:
            fail(f"docker-compose.yml {n}: healthcheck does not probe port {port}: {test}")
        else:
            health.add(m.group(2))
        if [str(p) for p in s.get("expose") or []] != [port]:
            fail(f"docker-compose.yml {n}: expose {s.get('expose')} != listen port {port}")
        stop = seconds(str(s.get("stop_grace_period", "10s")))
        if stop is None or stop < grace_ms / 1000 + 10:
            fail(f"docker-compose.yml {n}: stop_grace_period {s.get('stop_grace_period')} below "
                 f"grace {grace_ms} ms + 10 s")
        nofile = ((s.get("ulimits") or {}).get("nofile") or {}).get("soft", 0)
        if int(nofile) < 20000:
            fail(f"docker-compose.yml {n}: ulimits.nofile {nofile} below 20000")
        deps = s.get("depends_on") or {}
        for engine in ("postgres", "redis", "rabbitmq"):
            if (deps.get(engine) or {}).get("condition") != "service_healthy":
                fail(f"docker-compose.yml {n}: does not wait for {engine} to be healthy")
        mounts = [str(v).split(":")[1] for v in s.get("volumes") or []]
        for k in ("CONDUIT_MEDIA_DIR", "CONDUIT_DATA_DIR"):
            if k in first and first[k] not in mounts:
                fail(f"docker-compose.yml {n}: {k}={first[k]} is not a mounted volume ({mounts})")
        if "/var/lib/conduit" not in mounts:
            fail(f"docker-compose.yml {n}: the data directory /var/lib/conduit is not a volume")
    media = {tuple(v for v in s.get("volumes") or [] if "media" in str(v)) for s in gateways.values()}
    if len(media) != 1:
        fail(f"docker-compose.yml: the gateways do not share one media volume: {media}")
    # Engines named in the URLs are the services here.
    db = urllib.parse.urlsplit(first.get("CONDUIT_DATABASE_URL", ""))
    rd = urllib.parse.urlsplit(first.get("CONDUIT_REDIS_URL", ""))
    if db.hostname != "postgres" or rd.hostname != "redis" or first.get("CONDUIT_RABBITMQ_HOST") != "rabbitmq":
        fail("docker-compose.yml: engine URLs do not name the postgres/redis/rabbitmq services")
    pool = int(urllib.parse.parse_qs(db.query).get("pool_max_conns", ["8"])[0])
    pg_cmd = " ".join(str(c) for c in services.get("postgres", {}).get("command") or [])
    m = re.search(r"max_connections=(\d+)", pg_cmd)
    max_conn = int(m.group(1)) if m else PG_DEFAULT_MAX
    if len(gateways) * pool > max_conn - PG_RESERVED:
        fail(f"docker-compose.yml: {len(gateways)} gateways × pool {pool} exceed PostgreSQL "
             f"max_connections {max_conn} - {PG_RESERVED} reserved")
    pg_user = (services.get("postgres", {}).get("environment") or {})
    if db.username != pg_user.get("POSTGRES_USER") or db.path.lstrip("/") != pg_user.get("POSTGRES_DB"):
        fail("docker-compose.yml: CONDUIT_DATABASE_URL user/database differ from the postgres service")
    rmq_env = services.get("rabbitmq", {}).get("environment") or {}
    if first.get("CONDUIT_RABBITMQ_USERNAME") != rmq_env.get("RABBITMQ_DEFAULT_USER"):
        fail("docker-compose.yml: CONDUIT_RABBITMQ_USERNAME differs from the rabbitmq service's user")
    ok(f"docker-compose.yml parses: {len(gateways)} gateways on port {port} (identical settings, "
       f"healthcheck {sorted(health)}, stop_grace_period ≥ grace + 10 s, shared media volume), "
       f"PostgreSQL pools {len(gateways)} × {pool} ≤ max_connections {max_conn} - {PG_RESERVED}")

    base = urllib.parse.urlsplit(first.get("CONDUIT_PUBLIC_BASE_URL", ""))
    published = [str(p).split(":")[0] for p in (services.get("nginx") or {}).get("ports") or []]
    if base.port is None or str(base.port) not in published:
        fail(f"docker-compose.yml: CONDUIT_PUBLIC_BASE_URL {base.geturl()} is not nginx's published "
             f"port {published} (media URLs would not reach the balancer)")
    stop = min(seconds(str(s.get("stop_grace_period", "10s"))) for s in gateways.values())
    trial(binary, "compose gateway settings (embedded mode)", embedded(first),
          sorted(health | {"/health/live"}), stop)
    check_nginx(services.get("nginx") or {}, gateways, port, first, opts, nginx_bin)
    return first


def check_nginx(svc, gateways, port, gw_env, opts, nginx_bin):
    template = os.path.join(DEPLOY, "nginx", "conduit.conf")
    render = os.path.join(DEPLOY, "nginx", "render.sh")
    if not os.path.exists(template) or not os.path.exists(render):
        fail("deploy/nginx/conduit.conf or deploy/nginx/render.sh is missing")
        return
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in svc.get("volumes") or []}
    cmd = svc.get("command") or []
    script = " ".join(str(c) for c in cmd) if isinstance(cmd, list) else str(cmd)
    m = re.search(r"(\S+)/render\.sh((?:\s+--[a-z-]+\s+\S+)*)((?:\s+[A-Za-z0-9_.-]+:\d+)+)", script)
    if not m:
        fail(f"docker-compose.yml nginx: command does not run render.sh with the gateways: {script}")
        return
    if mounts.get(m.group(1)) not in ("./nginx", "./nginx/"):
        fail(f"docker-compose.yml nginx: {m.group(1)} is not the ./nginx directory ({mounts})")
    options = m.group(2).split()
    nodes = m.group(3).split()
    want = [f"{g}:{port}" for g in gateways]
    if sorted(nodes) != sorted(want):
        fail(f"docker-compose.yml nginx: renders {nodes}, the gateways are {want}")
    body = int(gw_env.get("CONDUIT_MAX_BODY_BYTES") or opts.default("CONDUIT_MAX_BODY_BYTES"))
    opt = dict(zip(options[::2], options[1::2]))
    size = opt.get("--max-body", "32m")
    mult = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}.get(size[-1].lower(), 1)
    nbytes = int(size.rstrip("kKmMgG")) * mult
    if nbytes != body:
        fail(f"nginx client_max_body_size {size} ({nbytes}) != gateway max body {body}")
    if not nginx_bin:
        fail("nginx not installed (scripts/deps.sh installs it): the rendered config was not tested")
        return
    tmp = tempfile.mkdtemp(prefix="conduit-nginx-check-")
    try:
        # nginx -t resolves upstream names: the compose names become loopback addresses.
        local = [f"127.0.0.1:{20001 + i}" for i in range(len(nodes))]
        args = ["sh", render, "--access-log", os.path.join(tmp, "access.log")] + \
            [x for pair in opt.items() if pair[0] != "--access-log" for x in pair] + local
        r = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
        if r.returncode != 0:
            fail(f"deploy/nginx/render.sh failed: {r.stderr.strip()}")
            return
        with open(os.path.join(tmp, "conduit.conf"), "w", encoding="utf-8") as f:
            f.write(r.stdout)
        with open(os.path.join(tmp, "nginx.conf"), "w", encoding="utf-8") as f:
            f.write(f"""daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/conduit.conf;
}}
""")
        t = subprocess.run([nginx_bin, "-t", "-q", "-p", tmp, "-c", os.path.join(tmp, "nginx.conf")],
                           capture_output=True, text=True, timeout=30, check=False)
        if t.returncode != 0:
            fail(f"nginx -t on the rendered deploy/nginx/conduit.conf: {t.stderr.strip()}")
        else:
            ok(f"deploy/nginx/conduit.conf rendered for {nodes} (as the compose nginx service "
               f"does) passes nginx -t; client_max_body_size {size} = gateway max body {body}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------------------------

def check_dockerfile(binary, opts, used_flags, compose_env):
    path = os.path.join(DEPLOY, "Dockerfile")
    text = read(path)
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    if len(stages) < 2 or not all(s[0].startswith("debian:12") for s in stages):
        fail(f"Dockerfile: want a multi-stage Debian 12 build, got {stages}")
    if "./scripts/deps.sh" not in text:
        fail("Dockerfile: the build stage does not use scripts/deps.sh")
    presets = json.loads(read(os.path.join(ROOT, "CMakePresets.json")))
    names = {p["name"] for p in presets.get("configurePresets", [])}
    for m in re.finditer(r"--preset\s+(\S+)", text):
        if m.group(1) not in names:
            fail(f"Dockerfile: CMake preset {m.group(1)} does not exist")
    if "--target conduit" not in text or "COPY --from=build /src/build/release/conduit" not in text:
        fail("Dockerfile: does not build and copy build/release/conduit")
    runtime = text.split("AS runtime", 1)[-1]
    m = re.search(r"apt-get install((?:[^&]|&(?!&))*)", runtime)
    installed = {w for w in (m.group(1) if m else "").replace("\\", " ").split()
                 if not w.startswith("-")}
    needed = set()
    try:
        libs = re.findall(r"NEEDED.*\[(\S+)\]", subprocess.run(
            ["readelf", "-d", binary], capture_output=True, text=True, check=True).stdout)
        cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
        for lib in libs:
            m = re.search(rf"^\s+{re.escape(lib)} \(libc6,x86-64[^)]*\) => (\S+)", cache, re.M)
            if not m:
                m = re.search(rf"^\s+{re.escape(lib)} .*=> (\S+)", cache, re.M)
            if not m:
                fail(f"Dockerfile check: {lib} not found by ldconfig")
                continue
            real = os.path.realpath(m.group(1))
            owner = subprocess.run(["dpkg", "-S", real], capture_output=True, text=True, check=False)
            if owner.returncode != 0:
                owner = subprocess.run(["dpkg", "-S", m.group(1)], capture_output=True, text=True, check=False)
            if owner.returncode != 0:
                fail(f"Dockerfile check: no Debian package owns {real}")
                continue
            needed.add(owner.stdout.split(":")[0].strip())
        missing = sorted(needed - installed - BASE_PACKAGES)
        if missing:
            fail(f"Dockerfile: the runtime stage does not install {missing} (needed by the binary)")
        else:
            ok(f"Dockerfile runtime stage installs the packages of all {len(libs)} shared libraries "
               f"the binary needs ({', '.join(sorted(needed - BASE_PACKAGES))})")
    except (OSError, subprocess.CalledProcessError) as e:
        fail(f"Dockerfile check: cannot list the binary's libraries: {e}")
    apt_cache = shutil.which("apt-cache")
    if apt_cache:
        unknown = []
        for pkg in sorted(installed):
            r = subprocess.run([apt_cache, "show", pkg], capture_output=True, text=True, check=False)
            if "Package:" not in r.stdout:
                unknown.append(pkg)
        if unknown and len(unknown) == len(installed):
            skip("apt-cache knows none of the runtime packages (no package lists): not looked up")
        elif unknown:
            fail(f"Dockerfile: apt does not know the runtime packages {unknown} (Debian 12 names?)")
        else:
            ok(f"Dockerfile: apt knows all {len(installed)} runtime packages")
    else:
        skip("apt-cache not installed: runtime package names not looked up")
    cmake_opts = set(re.findall(r"option\((\w+)", read(os.path.join(ROOT, "CMakeLists.txt"))))
    for d in re.findall(r"-D(\w+)=", text):
        if d not in cmake_opts and not d.startswith("CMAKE_"):
            fail(f"Dockerfile: -D{d} is not an option of CMakeLists.txt")
    env = dict(re.findall(r"(CONDUIT_[A-Z0-9_]+)=(\S+)", " ".join(re.findall(r"^ENV (.*(?:\\\n.*)*)", text, re.M))))
    port = env.get("CONDUIT_LISTEN", "").rsplit(":", 1)[-1]
    expose = re.findall(r"^EXPOSE\s+(\d+)", text, re.M)
    hc = re.search(r"http://127\.0\.0\.1:(\d+)(/\S+)", text)
    if expose != [port] or not hc or hc.group(1) != port:
        fail(f"Dockerfile: EXPOSE {expose}, HEALTHCHECK {hc and hc.group(0)} and CONDUIT_LISTEN port {port} disagree")
    data_dir = env.get("CONDUIT_DATA_DIR")
    if data_dir and f'VOLUME ["{data_dir}"]' not in text:
        fail(f"Dockerfile: CONDUIT_DATA_DIR {data_dir} is not the VOLUME")
    cmd = re.findall(r'^(?:CMD|ENTRYPOINT)\s+\[(.*)\]', text, re.M)
    add_flags([t.strip().strip('"') for c in cmd for t in c.split(",")], "deploy/Dockerfile", used_flags)
    for copied in re.findall(r"^COPY\s+(?!--from)(\S+)\s", text, re.M):
        if not os.path.exists(os.path.join(ROOT, copied)):
            fail(f"Dockerfile: COPY {copied} does not exist in the repository")
    ignore = os.path.join(DEPLOY, "Dockerfile.dockerignore")
    if not os.path.exists(ignore) or not re.search(r"^build$", read(ignore), re.M):
        fail("deploy/Dockerfile.dockerignore must exclude build/")
    if compose_env and compose_env.get("CONDUIT_MEDIA_DIR") and \
            compose_env["CONDUIT_MEDIA_DIR"] not in text:
        fail(f"Dockerfile: does not create the compose media directory {compose_env['CONDUIT_MEDIA_DIR']}")
    ok(f"Dockerfile: Debian 12 stages {[s[1] or s[0] for s in stages]}, preset release via "
       f"scripts/deps.sh, EXPOSE/HEALTHCHECK/CONDUIT_LISTEN on port {port}, health path {hc and hc.group(2)}")
    return hc and hc.group(2)


# ---------------------------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------------------------

KNOWN_KINDS = {
    ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"), ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"), ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"), ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
}


def check_k8s(binary, opts, used_flags, health_routes):
    k8s = os.path.join(DEPLOY, "k8s")
    objs = {}
    for name in sorted(os.listdir(k8s)):
        if not name.endswith(".yaml"):
            continue
        try:
            docs = [d for d in yaml.safe_load_all(read(os.path.join(k8s, name))) if d]
        except yaml.YAMLError as e:
            fail(f"deploy/k8s/{name} does not parse: {e}")
            continue
        for d in docs:
            key = (d.get("apiVersion"), d.get("kind"))
            if key not in KNOWN_KINDS:
                fail(f"deploy/k8s/{name}: unexpected apiVersion/kind {key}")
            if d.get("kind") != "Kustomization" and not (d.get("metadata") or {}).get("name"):
                fail(f"deploy/k8s/{name}: {d.get('kind')} without metadata.name")
            objs.setdefault(d.get("kind"), []).append((name, d))
    one = {k: v[0][1] for k, v in objs.items()}
    for kind in ("Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler",
                 "PodDisruptionBudget", "PersistentVolumeClaim", "Kustomization"):
        if kind not in one:
            fail(f"deploy/k8s: no {kind}")
            return
    kust = one["Kustomization"]
    for r in kust.get("resources", []):
        if not os.path.exists(os.path.join(k8s, r)):
            fail(f"kustomization.yaml: resource {r} does not exist")
    listed = {r for r in kust.get("resources", [])}
    for name, _ in sum(objs.values(), []):
        if name not in listed and name != "kustomization.yaml" and name != "secret.example.yaml":
            fail(f"kustomization.yaml does not list {name}")
    dep = one["Deployment"]
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    containers = spec["containers"]
    c = next((c for c in containers if c["name"] == "conduit"), None)
    if c is None:
        fail("deployment.yaml: no container named conduit")
        return
    add_flags(c.get("args", []) + c.get("command", []), "deploy/k8s/deployment.yaml", used_flags)
    cm = one["ConfigMap"]
    secret = one["Secret"]
    env = {}
    for ref in c.get("envFrom", []):
        if "configMapRef" in ref:
            if ref["configMapRef"]["name"] != cm["metadata"]["name"]:
                fail(f"deployment.yaml: configMapRef {ref['configMapRef']['name']} is not {cm['metadata']['name']}")
            env.update({k: str(v) for k, v in cm.get("data", {}).items()})
        if "secretRef" in ref:
            if ref["secretRef"]["name"] != secret["metadata"]["name"]:
                fail(f"deployment.yaml: secretRef {ref['secretRef']['name']} is not {secret['metadata']['name']}")
            env.update({k: str(v) for k, v in secret.get("stringData", {}).items()})
    for e in c.get("env", []):
        env[e["name"]] = str(e.get("value", ""))
    port = env.get("CONDUIT_LISTEN", opts.default("CONDUIT_LISTEN")).rsplit(":", 1)[-1]
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    if str(ports.get("http")) != port:
        fail(f"deployment.yaml: containerPort http {ports.get('http')} != CONDUIT_LISTEN port {port}")
    paths = set()
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        p = c.get(probe)
        if not p:
            fail(f"deployment.yaml: no {probe}")
            continue
        g = p.get("httpGet", {})
        if g.get("port") not in ("http", int(port)):
            fail(f"deployment.yaml: {probe} port {g.get('port')} is not the gateway's")
        if g.get("path") not in health_routes:
            fail(f"deployment.yaml: {probe} path {g.get('path')} is not a health route {sorted(health_routes)}")
        paths.add(g.get("path"))
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/health/ready":
        fail("deployment.yaml: readinessProbe must use /health/ready")
    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/health/live":
        fail("deployment.yaml: livenessProbe must use /health/live (engine outages must not restart pods)")
    health_deadline = health_deadline_s()
    if c.get("readinessProbe", {}).get("timeoutSeconds", 1) <= health_deadline:
        fail(f"deployment.yaml: readinessProbe timeoutSeconds must exceed the health deadline ({health_deadline} s)")
    grace_ms = int(env.get("CONDUIT_SHUTDOWN_GRACE_MS") or opts.default("CONDUIT_SHUTDOWN_GRACE_MS"))
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_s = int(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0
    tgp = spec.get("terminationGracePeriodSeconds", 30)
    if tgp < pre_s + grace_ms / 1000 + 10:
        fail(f"deployment.yaml: terminationGracePeriodSeconds {tgp} < preStop {pre_s} s + grace "
             f"{grace_ms / 1000:g} s + 10 s")
    threads = env.get("CONDUIT_THREADS", "0")
    limit = str(c.get("resources", {}).get("limits", {}).get("cpu", ""))
    if threads == "0" or (limit and limit.isdigit() and threads != limit):
        fail(f"deployment.yaml: CONDUIT_THREADS={threads} should equal the CPU limit {limit} "
             "(0 counts the node's cores)")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    for k in ("CONDUIT_DATA_DIR", "CONDUIT_MEDIA_DIR"):
        if k in env and env[k] not in mounts:
            fail(f"deployment.yaml: {k}={env[k]} is not a volume mount")
    media_vol = vols.get(mounts.get(env.get("CONDUIT_MEDIA_DIR", ""), ""), {})
    claim = (media_vol.get("persistentVolumeClaim") or {}).get("claimName")
    pvc = one["PersistentVolumeClaim"]
    if claim != pvc["metadata"]["name"] or "ReadWriteMany" not in pvc["spec"].get("accessModes", []):
        fail("deployment.yaml: the media directory is not the shared ReadWriteMany claim")
    sc = c.get("securityContext", {})
    if sc.get("readOnlyRootFilesystem") and "/tmp" not in mounts:
        fail("deployment.yaml: read-only root file system without a /tmp volume")
    if spec.get("securityContext", {}).get("runAsUser") != 10001:
        fail("deployment.yaml: runAsUser is not the image's conduit user (10001)")
    sel = dep["spec"]["selector"]["matchLabels"]
    for kind in ("Service", "PodDisruptionBudget"):
        o = one[kind]
        s = o["spec"]["selector"]
        s = s.get("matchLabels", s)
        if not all(labels.get(k) == v for k, v in s.items()):
            fail(f"{kind} selector {s} does not select the gateway pods {labels}")
    if not all(labels.get(k) == v for k, v in sel.items()):
        fail("deployment.yaml: selector does not match the pod template labels")
    svc = one["Service"]
    for p in svc["spec"]["ports"]:
        if p.get("targetPort") not in ports and p.get("targetPort") != int(port):
            fail(f"service.yaml: targetPort {p.get('targetPort')} is not a container port")
    hpa = one["HorizontalPodAutoscaler"]
    ref = hpa["spec"]["scaleTargetRef"]
    if ref.get("kind") != "Deployment" or ref.get("name") != dep["metadata"]["name"]:
        fail(f"hpa.yaml: scaleTargetRef {ref} is not the Deployment")
    if not any(m.get("type") == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"]):
        fail("hpa.yaml: no CPU metric")
    if not any(c2.get("resources", {}).get("requests", {}).get("cpu") for c2 in containers):
        fail("deployment.yaml: no CPU request (the HPA's utilisation needs one)")
    pool = int(urllib.parse.parse_qs(urllib.parse.urlsplit(
        env.get("CONDUIT_DATABASE_URL", "")).query).get("pool_max_conns", ["8"])[0])
    surge = dep["spec"].get("strategy", {}).get("rollingUpdate", {}).get("maxSurge", 0)
    peak = (hpa["spec"]["maxReplicas"] + int(surge)) * pool
    if peak > PG_DEFAULT_MAX - PG_RESERVED:
        fail(f"k8s: (maxReplicas + maxSurge) × pool_max_conns = {peak} exceeds PostgreSQL's default "
             f"max_connections {PG_DEFAULT_MAX} - {PG_RESERVED}; raise it or lower the bounds and say so")
    pdb = one["PodDisruptionBudget"]["spec"]
    if pdb.get("maxUnavailable", 0) >= hpa["spec"]["minReplicas"]:
        fail("pdb.yaml: maxUnavailable allows every pod to go")
    ok(f"deploy/k8s: {sum(len(v) for v in objs.values())} objects parse; port {port}, probes "
       f"{sorted(paths)}, terminationGracePeriodSeconds {tgp} ≥ preStop {pre_s} + grace "
       f"{grace_ms / 1000:g} + 10, selectors/references agree, peak PostgreSQL connections "
       f"{peak} ≤ {PG_DEFAULT_MAX - PG_RESERVED}")
    trial(binary, "k8s ConfigMap + Secret (embedded mode)", embedded(env),
          sorted(paths), tgp - pre_s)


def health_deadline_s():
    app = read(os.path.join(ROOT, "src", "app", "app.cpp"))
    m = re.search(r"health\.Run\(tag, ex->loop\(\), (\d+)ms", app)
    return int(m.group(1)) / 1000 if m else 5


def health_routes():
    app = read(os.path.join(ROOT, "src", "app", "app.cpp"))
    return set(re.findall(r'router\.Add\("GET", "(/health[a-z/]*)"', app))


# ---------------------------------------------------------------------------------------------
# docs/operations.md
# ---------------------------------------------------------------------------------------------

# Flags of other programs that the operations guide shows.
EXTERNAL_FLAGS = {"--build", "--now", "--offline", "--from-literal", "--from-env-file", "--fix-missing"}


def doc_flags_and_metrics(used_flags):
    metrics = {}
    if not os.path.exists(OPS_DOC):
        fail("docs/operations.md is missing")
        return metrics
    text = read(OPS_DOC)
    for span in re.findall(r"`([^`\n]+)`", text):
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", span):
            if flag not in EXTERNAL_FLAGS:
                used_flags.setdefault(flag, set()).add("docs/operations.md")
        for metric in re.findall(r"\b(conduit_[a-z0-9_]+|process_[a-z_]+)\b", span):
            metrics.setdefault(metric, set()).add("docs/operations.md")
    for root, _, files in os.walk(DEPLOY):
        for f in files:
            # Not nginx named locations (@name) or variables ($name).
            for metric in re.findall(r"(?<![@$])\b(conduit_[a-z][a-z0-9_]+)\b",
                                     read(os.path.join(root, f))):
                if not metric.startswith(("conduit_all", "conduit_n", "conduit_negotiate",
                                          "conduit_hub_", "conduit_connection", "conduit_node",
                                          "conduit_logged", "conduit_deploycheck", "conduit_a",
                                          "conduit_b", "conduit_pre", "conduit_post")):
                    metrics.setdefault(metric, set()).add(rel(os.path.join(root, f)))
    for path in re.findall(r"\bbench/results/[A-Za-z0-9_.-]+\.md\b", text):
        if not os.path.exists(os.path.join(ROOT, path)):
            fail(f"docs/operations.md cites {path}, which does not exist")
    return metrics


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary", help="the conduit executable")
    ap.add_argument("--nginx", default=shutil.which("nginx") or
                    ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None))
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    opts = Options(binary)
    ok(f"`{rel(binary)} serve --help` parsed: {len(opts.flags)} flags, {len(opts.envs)} environment names")
    used_envs, used_flags = {}, {}
    for root, dirs, files in os.walk(DEPLOY):
        # deploy/nginx is the balancer's (another owner); its settings are checked through nginx -t.
        dirs[:] = [d for d in dirs if d != "nginx"]
        for f in files:
            scan_env_names(os.path.join(root, f), used_envs)
    if os.path.exists(OPS_DOC):
        scan_env_names(OPS_DOC, used_envs)
    metrics_used = doc_flags_and_metrics(used_flags)
    routes = health_routes()
    distributed = bool(os.environ.get("CONDUIT_TEST_PG") and os.environ.get("CONDUIT_TEST_REDIS"))

    dist_report = check_systemd(binary, opts, used_flags, distributed)
    compose_env = check_compose(binary, opts, used_flags, a.nginx)
    docker_health = check_dockerfile(binary, opts, used_flags, compose_env)
    if docker_health and docker_health not in routes:
        fail(f"Dockerfile HEALTHCHECK path {docker_health} is not a route {sorted(routes)}")
    check_k8s(binary, opts, used_flags, routes)
    check_names(opts, used_envs, used_flags)
    # Metrics named in deploy/ and the guide exist: exported by a plain embedded start, or (the
    # Redis ones) by the distributed trial.
    plain = trial(binary, "default settings, for the metric names", {}, ["/health/live"], 30)
    exported = set((plain or {}).get("metrics", set())) | set((dist_report or {}).get("metrics", set()))
    sources = " ".join(read(os.path.join(r, f)) for r, _, fs in os.walk(os.path.join(ROOT, "src"))
                       for f in fs if f.endswith(".cpp"))
    missing = {m: p for m, p in metrics_used.items() if m not in exported}
    for m, places in sorted(missing.items()):
        where = ", ".join(sorted(places))
        if dist_report is None and f'"{m}"' in sources:
            skip(f"metric {m} ({where}) is registered in src/ but exported only with the engines "
                 "(no distributed trial)")
        else:
            fail(f"metric {m} ({where}) is not exported by the binary")
    if not [m for m in missing if dist_report is not None or f'"{m}"' not in sources]:
        ok(f"{len(metrics_used)} metric names in deploy/ and docs/operations.md are exported "
           f"by the binary{'' if dist_report else ' (or registered in src/)'}")
    print()
    if FAILS:
        print(f"check-deploy: {len(FAILS)} check(s) failed")
        return 1
    print("check-deploy: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
