#!/bin/sh
# redis-role master|replica|sentinel. Environment:
#   REDIS_PORT (6379), REDIS_BIND (127.0.0.1), REDIS_MASTER_HOST/REDIS_MASTER_PORT (replica,
#   sentinel), SENTINEL_SERVICE (mymaster), SENTINEL_QUORUM (2), SENTINEL_DOWN_AFTER_MS
#   (5000), SENTINEL_FAILOVER_TIMEOUT_MS (60000). Data and sentinel.conf live in /data
#   (Sentinel rewrites its file: it must be writable, one per sentinel).
# Persistence: appendonly everysec, so a restarted Redis keeps its locks.
set -eu
role=${1:-master}
port=${REDIS_PORT:-6379}
bind=${REDIS_BIND:-127.0.0.1}
mhost=${REDIS_MASTER_HOST:-127.0.0.1}
mport=${REDIS_MASTER_PORT:-6379}
mkdir -p /data
case "$role" in
  master)
    exec redis-server --port "$port" --bind "$bind" --dir /data --daemonize no \
      --appendonly yes --appendfsync everysec --protected-mode no --logfile "" ;;
  replica)
    exec redis-server --port "$port" --bind "$bind" --dir /data --daemonize no \
      --appendonly yes --appendfsync everysec --protected-mode no --logfile "" \
      --replicaof "$mhost" "$mport" ;;
  sentinel)
    svc=${SENTINEL_SERVICE:-mymaster}
    cat > /data/sentinel.conf <<CONF
port $port
bind $bind
dir /data
daemonize no
logfile ""
protected-mode no
sentinel monitor $svc $mhost $mport ${SENTINEL_QUORUM:-2}
sentinel down-after-milliseconds $svc ${SENTINEL_DOWN_AFTER_MS:-5000}
sentinel failover-timeout $svc ${SENTINEL_FAILOVER_TIMEOUT_MS:-60000}
sentinel parallel-syncs $svc 1
CONF
    exec redis-server /data/sentinel.conf --sentinel ;;
  *) echo "usage: redis-role master|replica|sentinel" >&2; exit 2 ;;
esac
