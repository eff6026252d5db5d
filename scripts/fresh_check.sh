#!/usr/bin/env bash
# Check sqz as a new user on a fresh machine would meet it: a clean Debian root
# (debootstrap), a fresh `git clone` of a commit, ../shared beside it, and README's two
# commands run in it as root:
#     bash scripts/setup.sh      then      bash scripts/test.sh
# Nothing of this machine's installed packages, pip packages, caches or environment goes
# in: the root has only what debootstrap puts there, and the commands run under `env -i`
# with PATH, HOME=/root, LANG, TERM (and JOBS, FUZZ_SECONDS, SQZ_NO_LLAMACPP when set).
# Only the network set-up is copied from this machine: /etc/resolv.conf, the Debian
# entries of its apt sources (the same mirror debootstrap used) and its site-local CA
# certificates (/usr/local/share/ca-certificates/*.crt, inert until the root installs
# the ca-certificates package; needed where HTTPS goes through a proxy).
#
# Steps: 1. base root: debootstrap (suite = this machine's VERSION_CODENAME, mirror = the
#           one this machine's apt sources use), then a pristine copy of it is saved as a
#           tarball; with --reuse an existing tarball is unpacked instead (seconds instead
#           of minutes). Either way the root starts as bare debootstrap output: every run
#           installs all of sqz's packages anew (apt-get update included).
#        2. `git clone` of the commit (default: HEAD of the repository this script is
#           in; uncommitted changes are NOT checked) into ROOT/work/main, and a
#           read-only copy of the shared folder (default: the repository's ../shared)
#           as ROOT/work/shared;
#        3. /proc, /sys, /dev, /dev/pts and a fresh /dev/shm mounted in the root
#           (unmounted by a trap on exit, failure or interrupt);
#        4. `bash scripts/setup.sh`, then (unless --setup-only) `bash scripts/test.sh`,
#           in the chroot, at `nice -n NICE`;
#        5. a summary: each step's exit status and wall time, setup.sh's results,
#           test.sh's closing lines (ctest's "tests passed" lines, each stage's
#           ok/FAILED, "all stages passed" or FAILED). The root is then deleted
#           (unless --keep).
# Exit status: 0 when every command run passed, 1 when setup.sh or test.sh failed,
# 2 on a usage error, 3 when the check itself could not be set up (debootstrap, clone,
# mounts), 130/143 when interrupted.
# Time on 2 cores: debootstrap ~2-5 min (--reuse: ~15 s), setup.sh 6-11 min, test.sh
# ~20-25 min (llama.cpp is built from source: the root has no cache), deleting the root
# ~1 min.
#
# Usage: sudo bash scripts/fresh_check.sh [options]
#   --setup-only   run only the first README command (setup.sh): a quicker check
#   --reuse        unpack the cached base tarball instead of running debootstrap
#                  (debootstraps and caches when there is none yet)
#   --keep         keep the root afterwards (for `chroot ROOT bash` to inspect it)
#   --root DIR     the root to build (default /var/tmp/sqz-fresh-check/root); it is
#                  deleted first if a previous run of this script made it
#   --ref REF      check this commit/branch/tag of the repository instead of HEAD
#   --shared DIR   the shared data folder to copy (default: the repository's ../shared)
#   --nice N       niceness of the heavy steps (default 10)
#   --log FILE     the log (default /var/tmp/sqz-fresh-check/logs/fresh_check-STAMP.log)
# Env: SQZ_FRESH_CACHE (base tarballs and logs, default /var/tmp/sqz-fresh-check)
# Needs: root, git, debootstrap (installed from Debian's packages when missing).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SQZ_FRESH_CACHE:-/var/tmp/sqz-fresh-check}"
root="$cache/root"
keep=0 reuse=0 setup_only=0 ref=HEAD shared="" niceness=10 log=""
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --keep) keep=1 ;;
        --reuse) reuse=1 ;;
        --setup-only) setup_only=1 ;;
        --root|--ref|--shared|--nice|--log)
            [[ $# -ge 2 ]] || { echo "fresh_check: $1 needs a value" >&2; exit 2; }
            case "$1" in
                --root) root="$2" ;; --ref) ref="$2" ;; --shared) shared="$2" ;;
                --nice) niceness="$2" ;; --log) log="$2" ;;
            esac
            shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "fresh_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ "$(id -u)" -eq 0 ]] || { echo "fresh_check: must run as root (debootstrap, chroot, mount)" >&2; exit 2; }
[[ "$niceness" =~ ^-?[0-9]+$ ]] || { echo "fresh_check: --nice needs a number" >&2; exit 2; }
mkdir -p "$cache/logs"
root="$(realpath -m "$root")"
[[ "$root" != / && "$here/" != "$root/"* && "$cache/" != "$root/"* ]] ||
    { echo "fresh_check: refusing --root $root" >&2; exit 2; }
[[ -n "$log" ]] || log="$cache/logs/fresh_check-$(date +%Y%m%d-%H%M%S).log"
log="$(realpath -m "$log")"
[[ "$log/" != "$root/"* ]] || { echo "fresh_check: the log must be outside the root" >&2; exit 2; }
mkdir -p "$(dirname "$log")"
: >"$log"
# Everything goes to the terminal and to the log; tee ignores ^C so that the clean-up
# messages still reach the log.
exec > >(trap '' INT TERM; exec tee -a "$log") 2>&1

say() { printf '\n[fresh_check %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'fresh_check: %s\n' "$*" >&2; exit 3; }
hms() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
say "log: $log"

# ---- what to check -----------------------------------------------------------------
commit="$(git -C "$here" rev-parse --verify "$ref^{commit}")" || die "no commit '$ref' in $here"
if [[ "$ref" == HEAD && -n "$(git -C "$here" status --porcelain --untracked-files=no)" ]]; then
    echo "note: $here has uncommitted changes; they are not part of the check"
fi
[[ -n "$shared" ]] || shared="$here/../shared"
if [[ -d "$shared" ]]; then shared="$(realpath "$shared")"; else
    echo "note: no shared folder at $shared; the clone gets none (setup.sh then uses data/)"
    shared=""
fi

# ---- suite and mirror, from this machine --------------------------------------------
suite="$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")"
[[ -n "$suite" ]] || suite=bookworm
arch="$(dpkg --print-architecture)"
# The Debian entries of this machine's apt sources (one-line .list and deb822 .sources
# files; apt reads no other names): "URI SUITE COMPONENTS..." for each suite of this
# release (bookworm, bookworm-updates, bookworm-security, ...).
apt_entries() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$f" ]] || continue
        awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                          line = $i; for (j = i + 1; j <= NF; j++) line = line " " $j; print line }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        awk 'function flush(   u, s, nu, ns, a, b) {
                 if (types ~ /(^| )deb( |$)/ && enabled !~ /^no$/) {
                     nu = split(uris, a, " "); ns = split(suites, b, " ")
                     for (u = 1; u <= nu; u++) for (s = 1; s <= ns; s++) print a[u], b[s], comps
                 }
                 types = uris = suites = comps = ""; enabled = "yes" }
             BEGIN { enabled = "yes" }
             /^[ \t]*#/ { next }
             /^[ \t]*$/ { flush(); next }
             /^[ \t]/ { if (key == "uris") uris = uris " " $0   # a continued field
                        else if (key == "suites") suites = suites " " $0
                        else if (key == "components") comps = comps " " $0
                        next }
             { key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "")
               if (key == "types") types = $0; else if (key == "uris") uris = $0
               else if (key == "suites") suites = $0; else if (key == "components") comps = $0
               else if (key == "enabled") enabled = tolower($0) }
             END { flush() }' "$f"
    done
}
mapfile -t entries < <(apt_entries | awk -v s="$suite" '$2 == s || index($2, s "-") == 1' | sort -u)
mirror="$(printf '%s\n' "${entries[@]}" | awk -v s="$suite" '$2 == s { print $1; exit }')"
[[ -n "$mirror" ]] || die "no apt source for suite '$suite' in /etc/apt/sources.list(.d); cannot pick a mirror"
tar_z=(zstd -T0 -3 -q) tar_ext=zst
command -v zstd >/dev/null || { tar_z=(gzip -1); tar_ext=gz; }
base_tar="$cache/base-$suite-$arch-$(printf '%s' "$mirror" | sha256sum | cut -c1-8).tar.$tar_ext"
echo "commit:  $commit ($(git -C "$here" log -1 --format=%s "$commit" | cut -c1-70))"
echo "suite:   $suite ($arch), mirror $mirror"
echo "root:    $root"
echo "shared:  ${shared:-(none)}"

# ---- clean-up: processes in the root, mounts, the root itself -------------------------
mounts=()
in_root_pids() {  # processes whose root directory is our root (all started by this run)
    local p r
    for p in /proc/[0-9]*; do
        r="$(readlink "$p/root" 2>/dev/null)" || continue
        [[ "$r" == "$root" ]] && printf '%s\n' "${p#/proc/}"
    done
    return 0
}
kill_in_root() {
    local pids
    mapfile -t pids < <(in_root_pids)
    [[ ${#pids[@]} -gt 0 ]] || return 0
    echo "stopping ${#pids[@]} process(es) left in the root: ${pids[*]}"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    sleep 3
    mapfile -t pids < <(in_root_pids)
    [[ ${#pids[@]} -eq 0 ]] || kill -KILL "${pids[@]}" 2>/dev/null || true
}
mounted_under_root() { awk -v r="$root" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts; }
unmount_all() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" ||
            echo "warning: could not unmount ${mounts[i]}"
    done
    mounts=()
}
remove_root() {  # only a root this script made, and never with anything mounted in it
    [[ -e "$root" ]] || return 0
    [[ -f "$root/.sqz-fresh-check" ]] || die "$root exists and was not made by fresh_check.sh; remove it or pick another --root"
    [[ -z "$(mounted_under_root)" ]] || die "something is still mounted under $root; not deleting it:
$(mounted_under_root)"
    rm -rf --one-file-system "$root"
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    kill_in_root
    unmount_all
    if [[ $keep -eq 1 ]]; then
        [[ -d "$root" ]] && echo "root kept: $root (chroot $root /bin/bash; remove with rm -rf --one-file-system $root)"
    else
        [[ -d "$root" ]] && echo "removing the root $root"
        (remove_root) || true
    fi
    echo "log: $log"
    exit "$rc"
}
on_signal() { echo; echo "fresh_check: interrupted (SIG$1)"; [[ $1 == INT ]] && exit 130; exit 143; }
trap cleanup EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

t_start=$SECONDS
declare -A step_rc=() step_time=()
step_names=()
record() { step_names+=("$1"); step_rc[$1]=$2; step_time[$1]=$3; }

# ---- 1. base root ----------------------------------------------------------------------
remove_root
if [[ $reuse -eq 1 && -f "$base_tar" ]]; then
    say "base: unpacking $base_tar (--reuse; made $(date -r "$base_tar" '+%Y-%m-%d %H:%M'))"
    t0=$SECONDS
    mkdir -p "$root"
    "${tar_z[0]}" -dc "$base_tar" | nice -n "$niceness" tar -x -p --numeric-owner -C "$root" ||
        die "could not unpack $base_tar"
    record "base (unpack cached tarball)" 0 $((SECONDS - t0))
else
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap (Debian package) on this machine"
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
    fi
    say "base: debootstrap $suite $root $mirror"
    t0=$SECONDS
    mkdir -p "$root"
    touch "$root/.sqz-fresh-check"
    nice -n "$niceness" debootstrap --arch="$arch" "$suite" "$root" "$mirror" ||
        die "debootstrap failed (its log: $root/debootstrap/debootstrap.log; rerun with --keep to keep it)"
    record "base (debootstrap)" 0 $((SECONDS - t0))
    say "base: saving a pristine copy as $base_tar"
    t0=$SECONDS
    rm -f "$root/.sqz-fresh-check"
    nice -n "$niceness" tar -c --numeric-owner --one-file-system -C "$root" . |
        nice -n "$niceness" "${tar_z[@]}" >"$base_tar.tmp.$$" && mv -f "$base_tar.tmp.$$" "$base_tar" ||
        { rm -f "$base_tar.tmp.$$"; echo "warning: could not save the base tarball"; }
    record "base (save tarball)" 0 $((SECONDS - t0))
fi
touch "$root/.sqz-fresh-check"

# ---- network set-up (the only things copied from this machine) ------------------------
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
{
    echo "# written by sqz's scripts/fresh_check.sh from the host's apt sources"
    printf 'deb %s\n' "${entries[@]}"
} >"$root/etc/apt/sources.list"
rm -f "$root"/etc/apt/sources.list.d/*.list "$root"/etc/apt/sources.list.d/*.sources
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi
# No service may start inside the chroot when a package is installed.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

# ---- 2. the clone and the shared data -------------------------------------------------
say "clone: $commit into $root/work/main"
t0=$SECONDS
mkdir -p "$root/work"
git clone -q --no-local "$here" "$root/work/main" || die "git clone failed"
git -C "$root/work/main" -c advice.detachedHead=false checkout -q --detach "$commit" ||
    die "git checkout $commit failed"
if [[ -n "$shared" ]]; then
    cp -a "$shared" "$root/work/shared"
    chmod -R a-w "$root/work/shared"
fi
record "clone + shared" 0 $((SECONDS - t0))

# ---- 3. mounts ---------------------------------------------------------------------------
mnt() {  # mnt TARGET MOUNT-ARGS...
    mkdir -p "$root$1"
    mount "${@:2}" "$root$1" || die "mount ${*:2} $root$1 failed"
    mounts+=("$root$1")
}
mnt /proc -t proc proc
mnt /sys -t sysfs sysfs
mnt /dev --bind /dev
mnt /dev/pts --bind /dev/pts
mnt /dev/shm -t tmpfs -o mode=1777,nosuid,nodev tmpfs

# ---- 4. README's commands in the chroot ---------------------------------------------------
envv=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
      USER=root LOGNAME=root SHELL=/bin/bash LANG=C.UTF-8 TERM=dumb)
for v in JOBS FUZZ_SECONDS SQZ_NO_LLAMACPP; do
    [[ -z "${!v:-}" ]] || envv+=("$v=${!v}")
done
run_in_root() {  # run_in_root NAME COMMAND: its output also goes to $cache/logs/...-NAME.log
    local name="$1" cmd="$2" steplog="${log%.log}-$1.log" rcfile t0 rc
    rcfile="$(mktemp)"
    say "$name: chroot $root: cd /work/main && $cmd"
    t0=$SECONDS
    ( set +e
      nice -n "$niceness" chroot "$root" /usr/bin/env -i "${envv[@]}" \
          /bin/bash -c "cd /work/main && $cmd" </dev/null 2>&1
      echo $? >"$rcfile"
    ) | tee "$steplog" &
    wait $! || true
    rc="$(cat "$rcfile" 2>/dev/null)"; rm -f "$rcfile"
    [[ -n "$rc" ]] || rc=1
    record "$name" "$rc" $((SECONDS - t0))
    echo "-- $name: exit $rc after $(hms $((SECONDS - t0)))"
}
run_in_root setup "bash scripts/setup.sh"
if [[ $setup_only -eq 0 ]]; then
    run_in_root test "bash scripts/test.sh"
fi
kill_in_root

# ---- 5. summary ---------------------------------------------------------------------------
say "summary (commit ${commit:0:12}, $suite, $( [[ $setup_only -eq 1 ]] && echo setup only || echo setup + test ))"
failed=0
for name in "${step_names[@]}"; do
    rc="${step_rc[$name]}"
    case "$name" in setup|test) cmd="bash scripts/$name.sh" ;; *) cmd="$name" ;; esac
    printf '  %-32s exit %-3s %s\n' "$cmd" "$rc" "$(hms "${step_time[$name]}")"
    [[ "$rc" -eq 0 ]] || failed=1
done
printf '  %-32s          %s\n' total "$(hms $((SECONDS - t_start)))"
setup_log="${log%.log}-setup.log"
if [[ -f "$setup_log" ]]; then
    echo "setup.sh:"
    grep -E '^perplexity|^== dependencies ready' "$setup_log" | sed 's/^/  /' || true
    if [[ "${step_rc[setup]}" -ne 0 ]]; then
        echo "  last step reached: $(grep '^== ' "$setup_log" | tail -n1)"
        echo "  last lines:"; tail -n 15 "$setup_log" | sed 's/^/    /'
    fi
fi
test_log="${log%.log}-test.log"
if [[ $setup_only -eq 0 && -f "$test_log" ]]; then
    echo "test.sh:"
    grep -E 'tests passed|^The following tests FAILED|^[[:space:]]+[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subprocess|Not Run|Exception)|^-- .*: (ok|FAILED)|^all stages passed|^FAILED' \
        "$test_log" | sed 's/^/  /' || true
fi
echo "step logs: ${log%.log}-*.log"
if [[ $failed -ne 0 ]]; then
    echo "RESULT: FAILED"
    exit 1
fi
echo "RESULT: passed"
