# Shared helpers for the deploy/local scripts. Source it; do not run it.
# Everything the local stack writes lives under $LIENTHONG_STATE_DIR (default: <repo>/.state),
# which is git-ignored, so a fresh clone starts clean and `down --purge` resets it.
set -euo pipefail

LT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LT_STATE="${LIENTHONG_STATE_DIR:-$LT_ROOT/.state}"
mkdir -p "$LT_STATE"

lt_log() { printf '\033[1;34m[lienthong]\033[0m %s\n' "$*" >&2; }
lt_die() { printf '\033[1;31m[lienthong] error:\033[0m %s\n' "$*" >&2; exit 1; }

# apt-get install, once per package set, only when something is missing.
lt_apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  lt_log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# A java of at least the given major version (default 17): JAVA_HOME, then the default java,
# then any JDK under /usr/lib/jvm (the machine keeps a newer Temurin beside the default 17).
lt_java_major() { "$1" -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}' | cut -d. -f1; }
lt_java() {
  local min="${1:-17}" candidate major
  for candidate in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} "$(command -v java 2>/dev/null)" $(ls -d /usr/lib/jvm/*/bin/java 2>/dev/null | sort -rV); do
    [ -x "$candidate" ] || continue
    major=$(lt_java_major "$candidate")
    if [ "${major:-0}" -ge "$min" ]; then echo "$candidate"; return 0; fi
  done
  lt_die "no Java $min+ found (JAVA_HOME, PATH, /usr/lib/jvm); install a JDK $min+ or set JAVA_HOME"
}

# True when the pid in the file is a live process.
lt_pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Poll a command until it succeeds or the deadline passes; show the log tail on failure.
lt_wait_for() {
  local what="$1" seconds="$2" logfile="$3"; shift 3
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      [ -f "$logfile" ] && tail -n 40 "$logfile" >&2
      lt_die "$what not ready after ${seconds}s (log: $logfile)"
    fi
    sleep 0.5
  done
}

# Stop a process by pid file: TERM, wait, then KILL.
lt_stop_pid() {
  local name="$1" pidfile="$2" seconds="${3:-30}"
  if ! lt_pid_alive "$pidfile"; then rm -f "$pidfile"; lt_log "$name is not running"; return 0; fi
  local pid; pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + seconds))
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then lt_log "$name did not stop in ${seconds}s; killing"; kill -9 "$pid" 2>/dev/null || true; break; fi
    sleep 0.3
  done
  rm -f "$pidfile"
  lt_log "$name stopped"
}

# Writes a random password to file $1, readable by this user only, unless it holds one already.
lt_password_file() {
  [ -s "$1" ] || (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$1")
}

# Kafka principals of the local stack, one SCRAM user each (deploy/acls.toml grants their rights):
# admin runs topics, ACLs and schemas (and the tests); each service has its own.
LT_KAFKA_PRINCIPALS="admin gateway regional deidentifier warehouse analytics"

# Users of the local schema registry (deploy/local/registry/start gives each its role): admin
# administers it, registers the schemas (deploy/local/stack) and runs the tests; services and
# analytics read schemas only.
LT_REGISTRY_USERS="admin services analytics"

# Registry client settings of one user, as lienthong environment variables.
lt_registry_env() {
  local user="$1"
  echo "export LIENTHONG_REGISTRY_USERNAME=$user"
  echo "export LIENTHONG_REGISTRY_PASSWORD_FILE=$LT_STATE/registry/users/$user.password"
}

# The newest PostgreSQL server's binaries folder (Debian installs them by major version).
lt_pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }

# psql as the local cluster's administrator, over TLS checked against the development CA.
lt_psql_admin() {
  PGPASSWORD="$(cat "$LT_STATE/postgres-users/postgres.password")" PGSSLMODE=verify-full \
    PGSSLROOTCERT="$LT_STATE/pki/ca.pem" "$(lt_pg_bindir)/psql" -h localhost \
    -p "${LIENTHONG_PG_PORT:-5432}" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"
}

# Kafka client settings of one principal, as lienthong environment variables.
lt_kafka_env() {
  local user="$1"
  echo "export LIENTHONG_KAFKA_SASL_USERNAME=$user"
  echo "export LIENTHONG_KAFKA_SASL_PASSWORD_FILE=$LT_STATE/kafka/users/$user.password"
}
