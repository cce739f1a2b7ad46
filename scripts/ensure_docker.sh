#!/usr/bin/env bash
# Make sure a Docker engine answers. When none does and we are root on a machine
# that can install it, install Debian's engine and start it the way CI does
# (no default bridge, no iptables: containers use --network host or none).
# Otherwise stop at once with the command that fixes it.
set -euo pipefail

if docker info >/dev/null 2>&1; then
    exit 0
fi
if ! command -v docker >/dev/null 2>&1 && ! command -v apt-get >/dev/null 2>&1; then
    echo "error: no docker client. Install Docker: https://docs.docker.com/engine/install/" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: no Docker engine answers. Start it, e.g.: sudo systemctl start docker" >&2
    exit 1
fi
if ! command -v dockerd >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: no Docker engine answers and dockerd is not installed. Install Docker Engine." >&2
        exit 1
    fi
    echo "installing the Docker engine (apt-get install docker.io debootstrap)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q docker.io debootstrap >/dev/null
fi
if ! command -v debootstrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
fi
echo "starting dockerd (log: /var/log/dockerd.log)"
nohup dockerd --bridge=none --iptables=false >/var/log/dockerd.log 2>&1 &
for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        echo "Docker engine is up"
        exit 0
    fi
    sleep 1
done
echo "error: dockerd did not start within 60 s; see /var/log/dockerd.log, or run:" >&2
echo "  dockerd --bridge=none --iptables=false" >&2
exit 1
