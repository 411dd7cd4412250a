#!/bin/sh
# Entry point of a docker-compose agent: one simulated host with weave, then the agent.
set -eu
BIN=/opt/weave/bin
export PATH="$BIN:$PATH"
# The scenario runs `nc` in tasks; Mesos command tasks use the agent's filesystem.
if ! command -v nc >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq netcat-openbsd) >/dev/null 2>&1 ||
    echo "agent-entrypoint: could not install netcat-openbsd; the scenario needs nc" >&2
fi
mkdir -p /var/lib/weave /opt/cni/bin /etc/cni/net.d
# One 10-weave.conflist that both Mesos and libcni runtimes read.
weave setup --cni-bin-dir /opt/cni/bin --cni-conf-dir /etc/cni/net.d
# shellcheck disable=SC2086
weaver --datadir /var/lib/weave ${WEAVE_PEERS:-} >/var/log/weaver.log 2>&1 &
i=0
until weave status >/dev/null 2>&1; do
  i=$((i + 1)); [ "$i" -lt 50 ] || { echo "agent-entrypoint: weaver did not start" >&2; cat /var/log/weaver.log >&2; exit 1; }
  sleep 0.2
done
weave-mesos agent-flags --check --cni-config-dir /etc/cni/net.d --cni-plugins-dir /opt/cni/bin >/dev/null ||
  echo "agent-entrypoint: host check reported problems (see above)" >&2
if command -v mesos-agent >/dev/null 2>&1; then exec mesos-agent; else exec mesos-slave; fi
