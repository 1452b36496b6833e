#!/usr/bin/env bash
# Measures a streamed backup upload and download: throughput, and the server's peak RSS
# (VmHWM) while a SIZE_MB backup passes through it. Release build, SQLite + local disk,
# server and client (curl) in separate processes on loopback.
#   scripts/bench-backup.sh [SIZE_MB]        (default 400)
set -euo pipefail
SIZE_MB=${1:-400}
BIN=${ADIUVA_BIN:-target/release/adiuva}
[ -x "$BIN" ] || cargo build --release -p adiuva-cli
WORK=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ADIUVA_RATE_LIMIT_ENABLED=false ADIUVA_LOG=warn "$BIN" --data-dir "$WORK/data" serve --bind "127.0.0.1:$PORT" 2>"$WORK/server.log" &
PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/api/v1/health" >/dev/null && break; sleep 0.1; done
BASE="http://127.0.0.1:$PORT/api/v1"
TOKEN=$(curl -sf -X POST "$BASE/auth/register" -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","password":"bench-password-1"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
"$BIN" --data-dir "$WORK/data" user set-tier bench@example.com team >/dev/null
echo "RSS after start: $(grep VmRSS /proc/$PID/status | awk '{print $2, $3}')"
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom >"$WORK/backup.bin"
SUM=$(sha256sum "$WORK/backup.bin" | cut -d' ' -f1)
START=$(date +%s.%N)
CODE=$(curl -s -o "$WORK/put.out" -w '%{http_code}' -X PUT "$BASE/backup" -H "Authorization: Bearer $TOKEN" \
  -H 'X-Backup-Version: 1' -H 'X-Backup-Timestamp: 1700000000000' -H "X-Backup-Checksum: $SUM" \
  -H 'Content-Type: application/octet-stream' -T "$WORK/backup.bin")
END=$(date +%s.%N)
[ "$CODE" = 200 ] || { echo "upload failed: $CODE $(cat "$WORK/put.out")"; exit 1; }
python3 -c "print(f'upload   {$SIZE_MB} MiB in {$END-$START:.2f} s = {$SIZE_MB/($END-$START):.0f} MiB/s')"
START=$(date +%s.%N)
curl -sf "$BASE/backup" -H "Authorization: Bearer $TOKEN" -o "$WORK/back.bin"
END=$(date +%s.%N)
python3 -c "print(f'download {$SIZE_MB} MiB in {$END-$START:.2f} s = {$SIZE_MB/($END-$START):.0f} MiB/s')"
[ "$(sha256sum "$WORK/back.bin" | cut -d' ' -f1)" = "$SUM" ] && echo "round trip: checksum matches"
echo "server peak RSS (VmHWM): $(grep VmHWM /proc/$PID/status | awk '{print $2, $3}')"
