#!/usr/bin/env bash
# System packages the tests use beside Docker: a browser for the web page test, a
# registry for the push test, Java for the TorchServe comparison, wrk for load, and
# docker compose for the SageMaker Python SDK's local mode (examples/).
# Installs only what is missing, and only as root on Debian/Ubuntu; otherwise it
# prints the command to run (the tests then say what is missing).
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing test dependencies; install them with: sudo apt-get install -y ${need[*]}" >&2
    exit 0
fi
echo "installing test dependencies: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${need[@]}" >/dev/null
# Debian's docker-registry package starts a registry service on :5000 where systemd runs;
# the tests start their own on a free loopback port.
