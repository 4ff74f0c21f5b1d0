#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""./dev bench: the benchmarks BENCHMARKS.md quotes.

On a private stack (aziot_harness.Stack + aziot_stack.KeysServices: dbus-daemon with our policy, the
real polkitd, keyd activated on demand, the gateway on keyd.sock) it measures:

  * cold D-Bus activation of keyd to its first reply;
  * /sign HMAC-SHA256 through the gateway with tests/bench/http-load at 1 and 16 keep-alive
    connections (requests/s, p50, p99), max_requests raised to 64 as in the reference figures;
    then again with the load generator, the gateway and keyd all on one CPU;
  * Sign straight over D-Bus with tests/bench/dbus-sign, 1 and 16 calls in flight;
  * /sign ECDSA-P256 through the gateway, 1 and 16 connections, with a key pair in the file store
    and with one on a softhsm2 token (a preloaded PKCS#11 location), so that the two compare;
  * TLS handshakes per second with client authentication (tests/bench/tls-handshake, client and
    server in one process), the client key held by keyd through the OpenSSL provider beside an
    in-memory key of the same type: EC P-256 and RSA-2048, TLS 1.3 and 1.2;
  * the in-process floor with tests/bench/hmac-floor;
  * the machine's floor for a sequential request with tests/bench/pingpong: 200 bytes to an echo
    server and back, directly (two processes woken per request) and through a relay (four, as
    client, gateway, keyd, gateway), free and on one CPU — the cost of wake-ups alone;
  * memory of keyd and the gateway: idle, and after 100,000 more requests (VmRSS, and the private
    part, which is what a process adds to the machine: shared library pages are counted once for
    every process that maps them).

Prints a Markdown table and writes the raw figures as JSON to BUILD/bench/results.json.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import aziot_harness  # noqa: E402
import aziot_stack  # noqa: E402
import aziot_tokens  # noqa: E402


def memory_kib(pid):
    """VmRSS and private (Private_Clean + Private_Dirty) memory of a process, in KiB."""
    rss = private = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                private += int(line.split()[1])
    return {"rss_kib": rss, "private_kib": private}


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def run_json(argv, env):
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def http(sock, method, path, body=None):
    """One request with curl; returns (status, parsed JSON or None)."""
    argv = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket", sock, "-X", method,
            f"http://keyd.sock{path}"]
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    text, _, status = out.stdout.rpartition("\n")
    return int(status), (json.loads(text) if text else None)


def keyd_pid(stack):
    bus = stack.bus()
    obj = bus.get_object("org.freedesktop.DBus", "/org/freedesktop/DBus")
    return int(obj.GetConnectionUnixProcessID(aziot_stack.KEYS_BUS_NAME,
                                              dbus_interface="org.freedesktop.DBus"))


def daemon_figures(stack, bus_name, path, iface, method, signature, call_args, calls):
    """Cold D-Bus activation of a daemon to its first reply, its memory idle, the rate of calls
    from one Python client (one in flight), and its memory after them."""
    import dbus
    conn = dbus.bus.BusConnection(stack.bus_address)
    t0 = time.monotonic()
    conn.call_blocking(bus_name, path, iface, method, signature, call_args, timeout=30)
    out = {"cold_activation_ms": round((time.monotonic() - t0) * 1000, 1)}
    obj = conn.get_object("org.freedesktop.DBus", "/org/freedesktop/DBus")
    pid = int(obj.GetConnectionUnixProcessID(bus_name, dbus_interface="org.freedesktop.DBus"))
    out["idle"] = memory_kib(pid)
    t0 = time.monotonic()
    for _ in range(calls):
        conn.call_blocking(bus_name, path, iface, method, signature, call_args, timeout=30)
    out["calls"] = calls
    out["calls_per_second"] = round(calls / (time.monotonic() - t0))
    out["after"] = memory_kib(pid)
    out["threads"] = threads(pid)
    conn.close()
    return out


def measure_other_daemons(stack, build, run_dir, seconds):
    """certd and tpmd (on swtpm) as D-Bus activatable services, next to the keyd of the stack."""
    import dbus
    import aziot_tpm
    results = {}
    certs = aziot_stack.CertsServices(stack, certd_args=["--idle-timeout=0"])
    certs.start(gateway=False)
    conn = dbus.bus.BusConnection(stack.bus_address)
    results["certd"] = daemon_figures(stack, "org.aziot.Certificates1", "/org/aziot/Certificates1",
                                      "org.aziot.Certificates1", "ListCertificates", "a{sv}",
                                      [{}], 10000)
    with aziot_tpm.Swtpm(os.path.join(run_dir, "swtpm")) as tpm:
        services = aziot_stack.TpmServices(stack, tpm.tcti, tpmd_args=["--idle-timeout=0"])
        services.start(gateway=False)
        results["tpmd"] = daemon_figures(stack, "org.aziot.Tpm1", "/org/aziot/Tpm1",
                                         "org.aziot.Tpm1", "GetTpmKeys", "a{sv}", [{}], 10000)
        ek, srk = conn.call_blocking("org.aziot.Tpm1", "/org/aziot/Tpm1", "org.aziot.Tpm1",
                                     "GetTpmKeys", "a{sv}", [{}], byte_arrays=True, timeout=30)
        blob = aziot_tpm.make_auth_key_blob(bytes(ek), bytes(srk), os.urandom(32))
        conn.call_blocking("org.aziot.Tpm1", "/org/aziot/Tpm1", "org.aziot.Tpm1",
                           "ImportAuthKey", "aya{sv}", [dbus.ByteArray(blob), {}], timeout=30)
        n, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < min(seconds, 5):
            conn.call_blocking("org.aziot.Tpm1", "/org/aziot/Tpm1", "org.aziot.Tpm1",
                               "SignWithAuthKey", "aya{sv}", [dbus.ByteArray(b"x" * 64), {}],
                               timeout=30)
            n += 1
        results["tpmd"]["hmac_per_second"] = round(n / (time.monotonic() - t0))
        stack.stop_process("gateway-tpmd") if "gateway-tpmd" in stack.processes else None
    conn.close()
    return results


def measure(args):
    build = os.path.abspath(args.build_dir)
    bench_bin = os.path.join(build, "tests", "bench")
    results = {}
    run_dir = tempfile.mkdtemp(prefix="aziot-bench-", dir="/tmp")
    os.chmod(run_dir, 0o755)
    stack = aziot_harness.Stack(run_dir, args.source_dir, build)
    token = aziot_tokens.SoftHsmToken(os.path.join(run_dir, "softhsm"), label="bench")
    with stack, token:
        # keyd starts with the file store alone: the HMAC, D-Bus and memory figures are those of
        # the default configuration. The PKCS#11 part comes last (see below).
        services = aziot_stack.KeysServices(stack, keyd_args=["--idle-timeout=0"],
                                            keyd_env=token.env)
        services.start(max_requests=64)
        env = stack.child_env()
        sock = services.keyd_socket

        # Cold activation: the first call starts keyd.
        t0 = time.monotonic()
        subprocess.run(["busctl", "--system", "call", aziot_stack.KEYS_BUS_NAME,
                        "/org/aziot/Keys1", "org.aziot.Keys1", "LoadKey", "sa{sv}", "absent", "0"],
                       env=env, capture_output=True, timeout=30)
        results["cold_activation_ms"] = round((time.monotonic() - t0) * 1000, 1)

        status, created = http(sock, "POST", "/key?api-version=2021-05-01",
                               {"keyId": "bench-http", "usage": "sign"})
        if status != 200:
            raise SystemExit(f"cannot create the benchmark key: {status} {created}")
        body = os.path.join(run_dir, "sign.json")
        with open(body, "w") as f:
            json.dump({"keyHandle": created["keyHandle"], "algorithm": "HMAC-SHA256",
                       "parameters": {"message": base64.b64encode(b"x" * 32).decode()}}, f)

        kpid, gpid = keyd_pid(stack), services.gateway.pid
        results["idle"] = {"keyd": memory_kib(kpid), "gateway": memory_kib(gpid)}
        all_cpus = os.sched_getaffinity(0)

        load = [os.path.join(bench_bin, "http-load"), "--socket", sock, "--method", "POST",
                "--path", "/sign?api-version=2021-05-01", "--body-file", body,
                "--seconds", str(args.seconds), "--warmup", "1"]
        results["http_sign"] = {str(c): run_json(load + ["--connections", str(c)], env)
                                for c in (1, 16)}
        results["dbus_sign"] = {str(k): run_json([os.path.join(bench_bin, "dbus-sign"),
                                                  "--seconds", str(args.seconds),
                                                  "--in-flight", str(k)], env)
                                for k in (1, 16)}

        # The same with the client, the gateway and keyd on one CPU: on a virtual machine a
        # wake-up across CPUs costs tens of microseconds, which is what bounds one connection.
        cpu = min(all_cpus)
        for pid in (kpid, gpid):
            os.sched_setaffinity(pid, {cpu})
        pin = ["taskset", "-c", str(cpu)]
        results["http_sign_one_cpu"] = {str(c): run_json(pin + load + ["--connections", str(c)],
                                                         env)
                                        for c in (1, 16)}
        for pid in (kpid, gpid):
            os.sched_setaffinity(pid, all_cpus)

        # 100,000 more requests, then memory again: it must not grow.
        n = 0
        while n < 100000:
            r = run_json(load[:-4] + ["--seconds", "2", "--warmup", "0", "--connections", "16"],
                         env)
            n += r["requests"]
        results["after_requests"] = n
        results["after"] = {"keyd": memory_kib(kpid), "gateway": memory_kib(gpid)}
        results["threads"] = {"keyd": threads(kpid), "gateway": threads(gpid)}

        # Last: keyd again with a PKCS#11 module and one key pair preloaded on the softhsm2
        # token (so that only that key's requests involve PKCS#11), for ECDSA with a key pair in
        # the file store and one on the token.
        with open(os.path.join(services.config_d, "pkcs11.toml"), "w") as f:
            f.write(f'[aziot_keys]\npkcs11_lib_path = "{token.module}"\n\n[preloaded_keys]\n'
                    f'bench-hsm = "{token.uri(object="bench-hsm")}"\n')
        os.kill(kpid, signal.SIGTERM)
        aziot_harness._wait_until(lambda: not os.path.exists(f"/proc/{kpid}/status") or
                                  "zombie" in open(f"/proc/{kpid}/status").read(), 10,
                                  "keyd to exit")
        http(sock, "GET", "/keypair/absent?api-version=2021-05-01")  # activates keyd again
        kpid = keyd_pid(stack)
        ecdsa_bodies = {}
        digest = base64.b64encode(hashlib.sha256(b"bench").digest()).decode()
        for where, key_id in (("file", "bench-fs-ec"), ("softhsm2", "bench-hsm")):
            status, created = http(sock, "POST", "/keypair?api-version=2021-05-01",
                                   {"keyId": key_id, "preferredAlgorithms": "ec-p256"})
            if status != 200:
                raise SystemExit(f"cannot create the {where} key pair: {status} {created}")
            ecdsa_bodies[where] = os.path.join(run_dir, f"ecdsa-{where}.json")
            with open(ecdsa_bodies[where], "w") as f:
                json.dump({"keyHandle": created["keyHandle"], "algorithm": "ECDSA",
                           "parameters": {"digest": digest}}, f)
        if "bench-hsm" not in token.objects():
            raise SystemExit("the softhsm2 key pair is not on the token")

        results["http_ecdsa"] = {
            where: {str(c): run_json(load[:-6] + ["--body-file", path,
                                                  "--seconds", str(args.seconds),
                                                  "--warmup", "1", "--connections", str(c)], env)
                    for c in (1, 16)}
            for where, path in ecdsa_bodies.items()}
        results["keyd_with_pkcs11"] = memory_kib(kpid)

        results["others"] = measure_other_daemons(stack, build, run_dir, args.seconds)

        results["tls"] = {}
        tls_env = dict(env, OPENSSL_MODULES=os.path.join(build, "provider"))
        for alg, key_id in (("ec-p256", "bench-tls-ec"), ("rsa-2048", "bench-tls-rsa")):
            status, created = http(sock, "POST", "/keypair?api-version=2021-05-01",
                                   {"keyId": key_id, "preferredAlgorithms": alg})
            if status != 200:
                raise SystemExit(f"cannot create the {alg} key pair: {status} {created}")
            for version in ("--tls1_3", "--tls1_2"):
                out = subprocess.run([os.path.join(bench_bin, "tls-handshake"), "--key-pair-id",
                                      key_id, "--seconds", str(min(args.seconds, 5)), version],
                                     env=tls_env, capture_output=True, text=True, timeout=120)
                rates = re.findall(r"= (\d+)/s \(mean (\d+) us\)", out.stdout)
                if out.returncode != 0 or len(rates) != 2:
                    raise SystemExit(f"tls-handshake failed ({out.returncode}):\n"
                                     f"{out.stdout}{out.stderr}")
                results["tls"][f"{alg} {version[2:].replace('_', '.')}"] = {
                    "keyd": {"per_second": int(rates[0][0]), "mean_us": int(rates[0][1])},
                    "memory": {"per_second": int(rates[1][0]), "mean_us": int(rates[1][1])}}

    results["hmac_floor"] = run_json([os.path.join(bench_bin, "hmac-floor"), "2"], os.environ)
    pingpong = [os.path.join(bench_bin, "pingpong")]
    cpu = ["taskset", "-c", str(min(os.sched_getaffinity(0)))]
    results["wakeup_floor"] = {
        f"{hops}{where}": run_json(prefix + pingpong + [str(hops), str(min(args.seconds, 5))],
                                   os.environ)
        for hops in (1, 2) for where, prefix in (("", []), ("_one_cpu", cpu))}
    return results


def table(r):
    h1, h16 = r["http_sign"]["1"], r["http_sign"]["16"]
    d1, d16 = r["dbus_sign"]["1"], r["dbus_sign"]["16"]
    mem = lambda m: f"{m['rss_kib'] / 1024:.1f} MB RSS, {m['private_kib'] / 1024:.1f} MB private"
    rows = [
        ("`/sign` via gateway, 1 connection", f"{h1['requests_per_second']:.0f} req/s",
         f"p50 {h1['p50_us']:.0f} µs, p99 {h1['p99_us']:.0f} µs"),
        ("`/sign` via gateway, 16 connections", f"{h16['requests_per_second']:.0f} req/s",
         f"p50 {h16['p50_us']:.0f} µs, p99 {h16['p99_us']:.0f} µs"),
        ("`/sign` via gateway, 1 connection, all on one CPU",
         f"{r['http_sign_one_cpu']['1']['requests_per_second']:.0f} req/s",
         f"p50 {r['http_sign_one_cpu']['1']['p50_us']:.0f} µs, "
         f"p99 {r['http_sign_one_cpu']['1']['p99_us']:.0f} µs"),
        ("`/sign` via gateway, 16 connections, all on one CPU",
         f"{r['http_sign_one_cpu']['16']['requests_per_second']:.0f} req/s",
         f"p50 {r['http_sign_one_cpu']['16']['p50_us']:.0f} µs, "
         f"p99 {r['http_sign_one_cpu']['16']['p99_us']:.0f} µs"),
        *[(f"`/sign` ECDSA P-256 via gateway, {where} key, {c} connection{'s' if c > 1 else ''}",
           f"{r['http_ecdsa'][where][str(c)]['requests_per_second']:.0f} req/s",
           f"p50 {r['http_ecdsa'][where][str(c)]['p50_us']:.0f} µs, "
           f"p99 {r['http_ecdsa'][where][str(c)]['p99_us']:.0f} µs")
          for where in ("file", "softhsm2") for c in (1, 16)],
        *[(f"TLS handshakes, client key {what}",
           f"{t['keyd']['per_second']} /s keyd key · {t['memory']['per_second']} /s in memory",
           f"mean {t['keyd']['mean_us']} µs · {t['memory']['mean_us']} µs")
          for what, t in r["tls"].items()],
        ("`Sign` over D-Bus, 1 in flight", f"{d1['calls_per_second']:.0f} calls/s",
         f"p50 {d1['p50_us']:.0f} µs, p99 {d1['p99_us']:.0f} µs"),
        ("`Sign` over D-Bus, 16 in flight", f"{d16['calls_per_second']:.0f} calls/s",
         f"p50 {d16['p50_us']:.0f} µs, p99 {d16['p99_us']:.0f} µs"),
        ("in-process HMAC (store only)", f"{r['hmac_floor']['sign_per_second']:.0f} ops/s", ""),
        ("in-process handle check + HMAC",
         f"{r['hmac_floor']['verify_handle_sign_per_second']:.0f} ops/s", ""),
        *[(f"floor: empty round trip, {what}",
           f"{r['wakeup_floor'][k]['round_trips_per_second']:.0f} /s",
           f"mean {r['wakeup_floor'][k]['mean_us']:.1f} µs")
          for k, what in (("1", "2 processes"), ("2", "via a relay, 3 processes"),
                          ("1_one_cpu", "2 processes on one CPU"),
                          ("2_one_cpu", "via a relay, 3 processes on one CPU"))],
        ("cold activation of keyd to first reply", f"{r['cold_activation_ms']} ms", ""),
        ("keyd idle", mem(r["idle"]["keyd"]), f"{r['threads']['keyd']} thread(s)"),
        (f"keyd after {r['after_requests']} more requests", mem(r["after"]["keyd"]), ""),
        ("gateway idle", mem(r["idle"]["gateway"]), f"{r['threads']['gateway']} thread(s)"),
        (f"gateway after {r['after_requests']} more requests", mem(r["after"]["gateway"]), ""),
        ("keyd after the softhsm2 runs (PKCS#11 module loaded)", mem(r["keyd_with_pkcs11"]), ""),
        *[row for name, what, verb in (("certd", "ListCertificates", "calls"),
                                       ("tpmd", "GetTpmKeys", "calls"))
          for row in (
              (f"cold activation of {name} to first reply",
               f"{r['others'][name]['cold_activation_ms']} ms", ""),
              (f"{name} idle", mem(r["others"][name]["idle"]),
               f"{r['others'][name]['threads']} thread(s)"),
              (f"`{what}` over D-Bus from Python, 1 in flight",
               f"{r['others'][name]['calls_per_second']} {verb}/s", ""),
              (f"{name} after {r['others'][name]['calls']} calls",
               mem(r["others"][name]["after"]), ""))],
        ("`SignWithAuthKey` (HMAC in swtpm) over D-Bus, 1 in flight",
         f"{r['others']['tpmd']['hmac_per_second']} calls/s", ""),
    ]
    out = ["| measure | figure | detail |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source-dir", required=True)
    p.add_argument("--build-dir", required=True)
    p.add_argument("--seconds", type=float, default=10)
    args = p.parse_args()
    results = measure(args)
    out_dir = os.path.join(args.build_dir, "bench")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
