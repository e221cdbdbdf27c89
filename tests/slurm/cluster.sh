# shellcheck shell=bash
# A one-node Slurm cluster on this machine, for tests: source this file, then
#   slurm_install            apt-get slurm-wlm and munge when missing (needs root)
#   slurm_start DIR [GPUS]   munged (unless one answers), slurmctld and slurmd with a
#                            generated slurm.conf in DIR; GPUS fake GPU gres (device
#                            files DIR/dev/nvidiaN, aliases of /dev/null) so that Slurm hands each task its own
#                            CUDA_VISIBLE_DEVICES as on a GPU node
#   slurm_stop               stop the daemons slurm_start started
# Everything (config, state, spool, logs) lives in DIR; SLURM_CONF points the clients at
# it. Checked with Debian 12's slurm-wlm 22.05 as root. No cgroup.conf on purpose:
# 22.05 has no "disabled" cgroup plugin and slurmd refuses to start with a bad one, so
# processes are tracked with proctrack/linuxproc and tasks are not confined.

SLURM_PIDS=()

slurm_install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
    command -v munged >/dev/null && command -v sbatch >/dev/null; then
    return 0
  fi
  [ "$(id -u)" = 0 ] || { echo "slurm_install: needs root (apt-get)" >&2; return 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null 2>&1 ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null; }
}

# Two free TCP ports, picked by the kernel.
_slurm_free_ports() {
  python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

_slurm_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return 0 # a munged already answers: use it
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    install -d -o munge -g munge -m 700 /etc/munge
    dd if=/dev/urandom bs=1024 count=1 of=/etc/munge/munge.key status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  install -d -o munge -g munge -m 755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  SLURM_MUNGED_STARTED=1
  for _ in $(seq 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "munged did not come up" >&2
  return 1
}

_slurm_conf() {
  local dir=$1 gpus=$2 host ports node
  read -r -a ports <<<"$(_slurm_free_ports)"
  # The node as slurmd sees it (its name, CPUs, sockets, cores, memory).
  node=$(slurmd -C | head -1)
  host=$(echo "$node" | sed -n 's/^NodeName=\([^ ]*\).*/\1/p')
  node="$node NodeAddr=127.0.0.1"
  if [ "$gpus" -gt 0 ]; then
    node="$node Gres=gpu:$gpus"
    mkdir -p "$dir/dev"
    # Character devices (slurmd checks), with /dev/null's numbers: nothing opens them.
    for i in $(seq 0 $((gpus - 1))); do
      [ -c "$dir/dev/nvidia$i" ] || mknod "$dir/dev/nvidia$i" c 1 3
    done
    echo "NodeName=$host Name=gpu File=$dir/dev/nvidia[0-$((gpus - 1))]" >"$dir/gres.conf"
  fi
  cat >"$dir/slurm.conf" <<EOF
ClusterName=enginetest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${ports[0]}
SlurmdPort=${ports[1]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
KillWait=5
MinJobAge=600
JobRequeue=1
GresTypes=gpu
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
$node
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

slurm_start() {
  local dir=$1 gpus=${2:-0}
  mkdir -p "$dir/state" "$dir/spool"
  _slurm_munge
  _slurm_conf "$dir" "$gpus"
  export SLURM_CONF=$dir/slurm.conf
  /usr/sbin/slurmctld -D -i >"$dir/slurmctld.out" 2>&1 &
  SLURM_PIDS+=($!)
  /usr/sbin/slurmd -D >"$dir/slurmd.out" 2>&1 &
  SLURM_PIDS+=($!)
  for _ in $(seq 100); do
    if sinfo -h -o '%t' 2>/dev/null | grep -qx 'idle'; then
      return 0
    fi
    sleep 0.2
  done
  echo "slurm did not come up; logs:" >&2
  tail -n 20 "$dir"/slurmctld.log "$dir"/slurmd.log "$dir"/*.out >&2 || true
  return 1
}

slurm_stop() {
  local pid
  for pid in "${SLURM_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${SLURM_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  SLURM_PIDS=()
  if [ "${SLURM_MUNGED_STARTED:-0}" = 1 ] && [ -f /run/munge/munged.pid ]; then
    kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    SLURM_MUNGED_STARTED=0
  fi
}
