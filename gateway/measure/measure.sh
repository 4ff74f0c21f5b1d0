#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The measurements behind docs/design.md, "Gateway: HTTP server and event loop":
#   gateway/measure/measure.sh BUILD_DIR [SECONDS]
# Needs `ninja -C BUILD_DIR gateway-measure tests/bench/http-load gateway/aziot-gatewayd
# services/keys/aziot-keyd` first, and curl. Starts private dbus-daemons and the measured processes
# ((c): the real aziot-keyd, its home in a temporary directory), prints the figures, stops everything
# it started.
set -euo pipefail

BUILD=$(cd "${1:?usage: measure.sh BUILD_DIR [SECONDS]}" && pwd)
SECONDS_PER_RUN=${2:-10}
M="$BUILD/gateway/measure"
TMP=$(mktemp -d)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

start() { # start LOGNAME CMD...: runs CMD in the background, remembers its pid in $LAST
    "${@:2}" >"$TMP/$1.log" 2>&1 &
    LAST=$!
    PIDS+=("$LAST")
}

rss() { # rss PID: VmRSS, anonymous part, PSS (kB) and threads
    printf 'VmRSS %s kB (anon %s kB), PSS %s kB, %s thread(s)' \
        "$(awk '/^VmRSS/ {print $2}' "/proc/$1/status")" \
        "$(awk '/^RssAnon/ {print $2}' "/proc/$1/status")" \
        "$(awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup")" \
        "$(awk '/^Threads/ {print $2}' "/proc/$1/status")"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

dbus-daemon --session --fork --print-address=1 --print-pid=1 >"$TMP/bus.out"
PIDS+=("$(sed -n 2p "$TMP/bus.out")")
export DBUS_SESSION_BUS_ADDRESS DBUS_SYSTEM_BUS_ADDRESS
DBUS_SESSION_BUS_ADDRESS=$(sed -n 1p "$TMP/bus.out")
DBUS_SYSTEM_BUS_ADDRESS=$DBUS_SESSION_BUS_ADDRESS

echo "== (a) sequential round trips of Ping(ay) through the private dbus-daemon, 50000 calls"
start bench-server "$M/bench-server"
sleep 0.3
for run in 1 2 3; do
    for mode in sync async; do
        "$M/bench-sdbus" "$mode" 50000
        "$M/bench-gdbus" "$mode" 50000
    done
done

echo "== (b) idle processes after 1 s (each with a bus connection)"
start idle-sdevent "$M/idle-sdevent"; P1=$LAST
start idle-glib "$M/idle-glib"; P2=$LAST
start soup-probe "$M/soup-probe" "$TMP/soup.sock"; P3=$LAST
sleep 1
echo "sd-event + sd-bus:                  $(rss "$P1")"
echo "GLib + GDBus:                       $(rss "$P2")"
echo "GLib + GDBus + libsoup 3 + json-glib: $(rss "$P3")"

echo "== libsoup 3 and the Host header"
/usr/bin/python3 - "$TMP/soup.sock" <<'EOF'
import socket, sys
for request in [b"GET /x HTTP/1.1\r\n\r\n", b"GET /x HTTP/1.1\r\nHost: /run/aziot/identityd.sock:0\r\n\r\n",
                b"GET /x HTTP/1.1\r\nHost: keyd.sock\r\n\r\n"]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sys.argv[1])
    s.sendall(request)
    print(repr(request), "->", s.recv(4096).split(b"\r\n")[0].decode())
    s.close()
EOF

sign_runs() { # sign_runs LABEL BUS-ADDRESS BUS-PID: (c) with aziot-keyd on that bus
    echo "== (c) POST /sign through aziot-gatewayd -> $1 -> aziot-keyd, ${SECONDS_PER_RUN} s per run"
    rm -rf "$TMP/keyd-home" "$TMP/keyd.sock"
    mkdir -m 0700 "$TMP/keyd-home"
    local env=(DBUS_SYSTEM_BUS_ADDRESS="$2" AZIOT_KEYD_CONFIG="$TMP/keyd.toml"
               AZIOT_KEYD_CONFIG_DIR="$TMP/none" AZIOT_LOG=info)
    start keyd env "${env[@]}" "$BUILD/services/keys/aziot-keyd" --idle-timeout=0; KEYD=$LAST
    start gatewayd env "${env[@]}" "$BUILD/gateway/aziot-gatewayd" --keyd-socket "$TMP/keyd.sock"
    GW=$LAST
    # keyd is not bus-activated here: ask until it owns its name and answers.
    local handle="" i
    for i in $(seq 200); do
        handle=$(curl -s --unix-socket "$TMP/keyd.sock" -X POST -H 'Content-Type: application/json' \
            -d '{"keyId":"bench","usage":"sign"}' 'http://keyd.sock/key?api-version=2021-05-01' |
            sed -n 's/^{"keyHandle":"\(.*\)"}$/\1/p') || true
        [ -n "$handle" ] && break
        sleep 0.05
    done
    [ -n "$handle" ] || { echo "keyd did not answer through the gateway" >&2; exit 1; }
    printf '{"keyHandle":"%s","algorithm":"HMAC-SHA256","parameters":{"message":"aGVsbG8gd29ybGQ="}}' \
        "$handle" >"$TMP/sign.json"
    echo "aziot-gatewayd idle: $(rss "$GW")"
    # One second of load first: the private connection is asked for on the first call.
    "$BUILD/tests/bench/http-load" --socket "$TMP/keyd.sock" --seconds 1 --warmup 0 --method POST \
        --path '/sign?api-version=2021-05-01' --body-file "$TMP/sign.json" >/dev/null
    BUS=$3
    TICK=$(getconf CLK_TCK)
    for run in 1 2 3; do
        for conns in 1 16; do
            g0=$(cpu_ticks "$GW"); b0=$(cpu_ticks "$BUS"); k0=$(cpu_ticks "$KEYD")
            out=$("$BUILD/tests/bench/http-load" --socket "$TMP/keyd.sock" --connections "$conns" \
                --seconds "$SECONDS_PER_RUN" --warmup 0 --method POST \
                --path '/sign?api-version=2021-05-01' --body-file "$TMP/sign.json")
            g1=$(cpu_ticks "$GW"); b1=$(cpu_ticks "$BUS"); k1=$(cpu_ticks "$KEYD")
            echo "$out"
            n=$(echo "$out" | sed 's/.*"requests": \([0-9]*\).*/\1/')
            awk -v n="$n" -v t="$TICK" -v g=$((g1 - g0)) -v b=$((b1 - b0)) -v k=$((k1 - k0)) 'BEGIN {
                printf "   CPU per request: gateway %.1f us, dbus-daemon %.1f us, aziot-keyd %.1f us\n",
                    g / t * 1e6 / n, b / t * 1e6 / n, k / t * 1e6 / n }'
        done
    done
    echo "aziot-gatewayd after the runs: $(rss "$GW"), peak $(awk '/^VmHWM/ {print $2}' "/proc/$GW/status") kB"
    kill "$GW" "$KEYD"
    wait "$GW" "$KEYD" 2>/dev/null || true
}

printf 'max_requests = 64\n[aziot_keys]\nhomedir_path = "%s/keyd-home"\n' "$TMP" >"$TMP/keyd.toml"
# The path through dbus-daemon: a bus that refuses OpenPrivateConnection, so that the gateway
# calls keyd over the bus, as it does any service that offers no private connection.
cat >"$TMP/no-private.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$TMP/no-private-bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
  <policy context="mandatory">
    <deny send_interface="org.aziot.Keys1" send_member="OpenPrivateConnection"/>
  </policy>
</busconfig>
CONF
dbus-daemon --config-file="$TMP/no-private.conf" --fork --print-address=1 --print-pid=1 \
    >"$TMP/no-private.out"
PIDS+=("$(sed -n 2p "$TMP/no-private.out")")
sign_runs "dbus-daemon" "$(sed -n 1p "$TMP/no-private.out")" "$(sed -n 2p "$TMP/no-private.out")"
sign_runs "a private connection (OpenPrivateConnection)" "$DBUS_SYSTEM_BUS_ADDRESS" \
    "$(sed -n 2p "$TMP/bus.out")"
