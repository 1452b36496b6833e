#!/usr/bin/env bash
# Installs the pgvector extension into the local PostgreSQL server, for the pgvector
# vector index (`ADIUVA_VECTOR_URL=pgvector`) and its tests.
#
# Debian 12 (bookworm) ships no pgvector package, so this builds Debian's own source
# package from the next release (trixie: pgvector 0.8, which has HNSW iterative scans)
# against the running server's headers. Idempotent: exits at once if the extension's
# control file is already installed.
#
# Environment (all optional):
#   PG_CONFIG             pg_config of the target server (default: derived from the server)
#   PGHOST/PGPORT/PGUSER  how to reach the server to ask its version (127.0.0.1/5432/postgres)
#   PGVECTOR_SRC_SUITE    the Debian suite to take the source from (default: the next release)
#
# apt is touched in two ways only: postgresql-server-dev-<major> (and make/gcc/dpkg-dev)
# are installed from the system's own sources, and one deb-src line lives in
# /etc/apt/adiuva-pgvector-src.list, *outside* sources.list.d, read only by this script's
# apt calls. So a normal `apt-get update`/`install` never sees trixie, neither its
# binaries nor even its source index.
set -euo pipefail

log() { echo "install-pgvector: $*"; }
die() {
  echo "install-pgvector: $*" >&2
  exit 1
}

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "must run as root (or with sudo available) to install packages"
  SUDO=(sudo)
fi

# --- which PostgreSQL --------------------------------------------------------------
if [ -z "${PG_CONFIG:-}" ]; then
  major=""
  if num=$(psql -h "${PGHOST:-127.0.0.1}" -p "${PGPORT:-5432}" -U "${PGUSER:-postgres}" \
    -tAc 'show server_version_num' 2>/dev/null); then
    major=$((num / 10000))
  fi
  if [ -z "$major" ]; then
    # Server not reachable: take the newest installed server.
    major=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)
  fi
  [ -n "$major" ] || die "no PostgreSQL server found (nothing answers on ${PGHOST:-127.0.0.1}:${PGPORT:-5432} and /usr/lib/postgresql is empty)"
  PG_CONFIG=/usr/lib/postgresql/$major/bin/pg_config
fi
[ -x "$PG_CONFIG" ] || die "$PG_CONFIG is not executable; set PG_CONFIG to the server's pg_config"
major=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
control="$("$PG_CONFIG" --sharedir)/extension/vector.control"

if [ -f "$control" ]; then
  log "pgvector $(sed -nE "s/^default_version *= *'([^']*)'.*/\1/p" "$control") is already installed for PostgreSQL $major ($control)"
  exit 0
fi

# --- where the source comes from ---------------------------------------------------
# shellcheck disable=SC1091
. /etc/os-release
codename=${VERSION_CODENAME:-}
if [ -z "${PGVECTOR_SRC_SUITE:-}" ]; then
  case "$codename" in
    bookworm) PGVECTOR_SRC_SUITE=trixie ;;
    *) die "no rule for Debian '$codename'; set PGVECTOR_SRC_SUITE to a suite whose pgvector source builds here (or install postgresql-$major-pgvector if your release packages it)" ;;
  esac
fi

# The mirror the system already uses for its own release: the first enabled `deb` entry
# whose suite is exactly "$codename" (so not -security, -updates or a third-party repo),
# in one-line or deb822 form. Only files apt itself reads (*.list, *.sources).
mirror_uri() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v suite="$codename" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) == suite) { print $i; exit }
      }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$codename" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && enabled != "no" && uris != "") {
          split(uris, u, " "); print u[1]; found = 1; exit
        }
        types = ""; suites = ""; uris = ""; enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      tolower($1) == "types:"   { $1 = ""; types = substr($0, 2) }
      tolower($1) == "suites:"  { $1 = ""; suites = substr($0, 2) }
      tolower($1) == "uris:"    { $1 = ""; uris = substr($0, 2) }
      tolower($1) == "enabled:" { enabled = tolower($2) }
      END { if (!found) flush() }' "$f"
  done
}
mirror=$(mirror_uri | head -n 1)
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}

# --- build dependencies (from the system's own release) ----------------------------
log "installing build dependencies for PostgreSQL $major"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  "postgresql-server-dev-$major" make gcc dpkg-dev xz-utils >/dev/null

# --- the source package ------------------------------------------------------------
src_list=/etc/apt/adiuva-pgvector-src.list
line="deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $PGVECTOR_SRC_SUITE main"
echo "# Written by adiuva scripts/install-pgvector.sh; read only by that script's apt calls." |
  "${SUDO[@]}" tee "$src_list" >/dev/null
echo "$line" | "${SUDO[@]}" tee -a "$src_list" >/dev/null
# Only this list: no other index is refreshed, and lists of the normal sources are kept.
apt_src=(-o "Dir::Etc::sourcelist=$src_list" -o "Dir::Etc::sourceparts=-" -o "APT::Get::List-Cleanup=0")

log "fetching the pgvector source from $mirror $PGVECTOR_SRC_SUITE"
"${SUDO[@]}" apt-get "${apt_src[@]}" update -q >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt downloads as the unprivileged _apt user when it can write the target directory.
if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$work"; fi
(cd "$work" && apt-get "${apt_src[@]}" source -q --only-source pgvector >/dev/null)
srcdir=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'pgvector-*' | head -n 1)
[ -n "$srcdir" ] || die "apt-get source pgvector produced no source tree in $work"

# --- build and install -------------------------------------------------------------
# OPTFLAGS="" drops pgvector's default -march=native, as Debian's package does: the
# library is then safe on any x86-64 this disk image boots on (pgvector picks its SIMD
# kernels at run time).
log "building $(basename "$srcdir")"
make -C "$srcdir" -s -j"$(nproc)" PG_CONFIG="$PG_CONFIG" OPTFLAGS="" >/dev/null
"${SUDO[@]}" make -C "$srcdir" -s install PG_CONFIG="$PG_CONFIG" OPTFLAGS="" >/dev/null

[ -f "$control" ] || die "the build finished but $control is missing"
log "installed pgvector $(sed -nE "s/^default_version *= *'([^']*)'.*/\1/p" "$control") for PostgreSQL $major ($control)"
