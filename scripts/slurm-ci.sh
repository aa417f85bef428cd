#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for tests/workflow/test_slurm.py (and by hand):
#   bash scripts/slurm-ci.sh start DIR    # installs Debian's Slurm + MariaDB if missing (apt-get; needs root)
#   export SLURM_CONF=DIR/etc/slurm.conf  # then sbatch/sinfo/sacct/scontrol talk to it
#   bash scripts/slurm-ci.sh stop DIR     # stops the daemons it started (by their PIDs)
# All state (configs, munge key and socket, database, spool, logs, PID files) lives under DIR. Ports:
# SLURM_CI_PORT (default 16817) for slurmctld, +1 slurmd, +2 slurmdbd, +3 mariadbd (127.0.0.1 only).
# The node, ci-node, has 8 CPUs, 16000 MB and two "GPUs" (character devices like /dev/null: SLURM hands
# them out as GRES and sets CUDA_VISIBLE_DEVICES; nothing computes on them). A job over its --mem is killed
# (OverMemoryKill); accounting goes through slurmdbd, so sacct lists every job. The one file outside DIR:
# /etc/slurm/slurm.conf, a link to DIR's while the cluster runs (Snakemake's job step clears SLURM_* from the
# environment of its srun, which then reads the default path); an existing file of another cluster is refused.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
action=$1
DIR=$(realpath -m "$2")
PORT=${SLURM_CI_PORT:-16817}
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged)  # stop order
SYSTEM_CONF=/etc/slurm/slurm.conf

pid_of() { [[ -s $DIR/run/$1.pid ]] && cat "$DIR/run/$1.pid"; }

stop() {
  for name in "${DAEMONS[@]}"; do
    pid=$(pid_of "$name" || true)
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$DIR/run/$name.pid"
  done
  if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$DIR/etc/slurm.conf" ]]; then rm -f "$SYSTEM_CONF"; fi
}

install_packages() {
  local missing=()
  for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client slurmdbd:slurmdbd munged:munge mariadbd:mariadb-server; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [[ -x /usr/sbin/${pair%%:*} ]] || missing+=("${pair#*:}")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    [[ $(id -u) -eq 0 ]] || { echo "slurm-ci: ${missing[*]} missing; run as root to install them" >&2; exit 2; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  for _ in $(seq $((limit * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "slurm-ci: $what did not come up in ${limit}s (logs in $DIR/log)" >&2
  tail -n 20 "$DIR"/log/*.log >&2 || true
  stop
  exit 1
}

write_configs() {
  local host; host=$(hostname -s)
  local sock=$DIR/munge/munge.socket
  mkdir -p "$DIR"/{etc,munge,mysql,state,spool,log,run,dev}
  chmod 700 "$DIR/munge"
  [[ -c $DIR/dev/gpu0 ]] || mknod "$DIR/dev/gpu0" c 1 3
  [[ -c $DIR/dev/gpu1 ]] || mknod "$DIR/dev/gpu1" c 1 3
  [[ -s $DIR/munge/munge.key ]] || { head -c 1024 /dev/urandom > "$DIR/munge/munge.key"; chmod 400 "$DIR/munge/munge.key"; }
  cat > "$DIR/etc/slurm.conf" <<EOF
ClusterName=ci
SlurmctldHost=$host
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 2))
AccountingStoragePass=$sock
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
NodeName=ci-node NodeHostname=$host NodeAddr=127.0.0.1 CPUs=8 RealMemory=16000 Gres=gpu:2 State=UNKNOWN
PartitionName=ci Nodes=ci-node Default=YES MaxTime=INFINITE State=UP
EOF
  cat > "$DIR/etc/gres.conf" <<EOF
NodeName=ci-node Name=gpu File=$DIR/dev/gpu[0-1]
EOF
  cat > "$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$sock
DbdHost=localhost
DbdPort=$((PORT + 2))
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageUser=root
StorageLoc=slurm_acct_db
StoragePass=$sock
EOF
  chmod 600 "$DIR/etc/slurmdbd.conf"
}

start() {
  install_packages
  stop  # a previous cluster in DIR
  write_configs
  export SLURM_CONF=$DIR/etc/slurm.conf
  if [[ -L $SYSTEM_CONF ]]; then  # a link left by a cluster of this script that is no longer running
    other=$(dirname "$(dirname "$(readlink "$SYSTEM_CONF")")")
    pid=$(cat "$other/run/slurmctld.pid" 2>/dev/null || true)
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || rm -f "$SYSTEM_CONF"
  fi
  if [[ -e $SYSTEM_CONF || -L $SYSTEM_CONF ]] && [[ $(readlink "$SYSTEM_CONF" || true) != "$SLURM_CONF" ]]; then
    echo "slurm-ci: $SYSTEM_CONF exists (another cluster's); stop that one or remove the file" >&2; exit 2
  fi
  mkdir -p "$(dirname "$SYSTEM_CONF")"
  ln -sfn "$SLURM_CONF" "$SYSTEM_CONF"
  local sock=$DIR/munge/munge.socket
  munged --force --socket="$sock" --key-file="$DIR/munge/munge.key" --pid-file="$DIR/run/munged.pid" \
    --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munge.seed"
  wait_for 10 munged munge --socket="$sock" -n
  if [[ ! -d $DIR/mysql/mysql ]]; then
    mariadb-install-db --no-defaults --datadir="$DIR/mysql" --user=root --auth-root-authentication-method=normal \
      --skip-test-db > "$DIR/log/mariadb-install.log" 2>&1
  fi
  # grant tables skipped: the database answers only 127.0.0.1 on a private port, and holds only this accounting
  mariadbd --no-defaults --datadir="$DIR/mysql" --socket="$DIR/run/mysql.sock" --port=$((PORT + 3)) \
    --bind-address=127.0.0.1 --pid-file="$DIR/run/mariadbd.pid" --user=root --skip-grant-tables \
    --log-error="$DIR/log/mariadbd.log" </dev/null >/dev/null 2>&1 &
  wait_for 30 mariadbd mariadb-admin --no-defaults --socket="$DIR/run/mysql.sock" ping
  slurmdbd  # reads slurmdbd.conf next to $SLURM_CONF
  wait_for 30 slurmdbd bash -c "exec 3<>/dev/tcp/127.0.0.1/$((PORT + 2))"
  slurmctld -f "$SLURM_CONF"
  wait_for 30 slurmctld scontrol ping
  # the cluster, an account and this user in the accounting database (sacct lists only known associations)
  sacctmgr -i add cluster ci >/dev/null 2>&1 || true
  sacctmgr -i add account ci Cluster=ci >/dev/null 2>&1 || true
  sacctmgr -i add user root Account=ci Cluster=ci >/dev/null 2>&1 || true
  slurmd -f "$SLURM_CONF" -N ci-node
  wait_for 60 "ci-node (idle)" bash -c "sinfo -h -n ci-node -o %t | grep -qx idle"
  echo "slurm-ci: up in $DIR (export SLURM_CONF=$SLURM_CONF)"
}

case $action in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
