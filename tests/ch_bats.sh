#!/bin/bash
# Run Charliecloud 0.31's own ch-run bats tests (from the Debian package
# charliecloud-tests) against the real ch-run AND against den, on this
# machine, and compare the results test by test.
#
# Usage: tests/ch_bats.sh [--den-only|--ch-only] [BATSFILE...]
#
#   BATSFILE  ch-run_misc.bats, run/ch-run_misc.bats or a full path; default:
#             ch-run_misc, ch-run_isolation, ch-run_uidgid, ch-run_escalated
#             and ch-run_join. ch-run_uidgid.bats runs as ch-test does it: once
#             with no guest ids, then once per guest user {dentest,root,nobody}
#             x guest group {dentest,root,nogroup}.
#
# Must run as root; bats itself runs as the unprivileged user $CH_BATS_USER
# (default dentest). For den, a two-line `ch-run` shim first in $PATH runs
# `deno run -A --no-lock cli/main.ts run "$@"` and rewrites den's verbose
# prefix `den[PID]:` to `ch-run[PID]:` on stderr (the bats files parse it);
# nothing else is changed.
#
# Fixtures (what `ch-test` would build; there is no builder here, so
# CH_TEST_BUILDER=none, CH_TEST_PACK_FMT=tar-unpack, CH_TEST_SCOPE=standard):
#
#   /var/tmp/den-chtest/chtest  the chtest image of examples/chtest/Build:
#       a hardlink copy of $CH_BATS_BASE (default /var/tmp/den-test-mpi-bookworm,
#       Debian bookworm + python3; the Alpine original needs network) plus
#       /test/* (the C programs built static on the host), the bind/symlink
#       fixtures, /home/overmount-me, /usr/bin/ch-ssh, /mnt/0..9, and an
#       /etc/os-release saying "Alpine Linux v3.9" (test 'distro differs'
#       expects that string).
#   /var/tmp/den-chtest/argenv  busybox image with /ch/environment as
#       ch-image would write it for Dockerfile.argenv.
#   Both are root-owned, world-readable, and rebuilt when an input changes
#   (base image listing, chtest sources, busybox, this script's builder).
#   Every run works on hardlink copies whose directories belong to the test
#   user (the tests write into the image and next to it), one per tool.
#   CH_TEST_PERMDIRS: made per run by make-perms-test (as root). It needs the
#   test user to have a supplementary group; if it has none, the harness lends
#   it group `users` for this run only: setpriv --groups for bats, and a
#   private copy of /etc/group bind-mounted (unshare --mount) for
#   make-perms-test. /etc/group is not modified.
#
# Each bats file that asserts on den's deliberate differences also runs, for
# den only, as an adjusted copy (FILE[adjusted]): `[[ $status -eq 1 ]]` also
# accepts 31 (den's own errors, as current Charliecloud) and 49 (command could
# not be started), and the `[[ -e /dev/shm/ch-run_* ]]` lines are dropped
# (den's --join uses an abstract socket).
#
# Exit status: 0 if every test that passes for ch-run passes for den, 1 if
# some do not, 2 for usage or setup errors. Not counted: "by design" (den
# fails the original but passes the adjusted copy), "n/a" (the setgid test
# copies $ch_runfile, here the shim script) and tests den skips
# (`ch-run --feature extglob`); CH_BATS_STRICT=1 counts "by design" too.
#
# Environment: CH_BATS_USER, CH_BATS_BASE, DENO (deno binary), CH_BATS_STRICT, CH_BATS_KEEP=1
# (keep the temp dir), CH_BATS_TIMEOUT (seconds per bats file, default 900).

set -euo pipefail
shopt -s nullglob

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHTEST_DIR=/usr/libexec/installed-tests/charliecloud
EXAMPLES=/usr/share/doc/charliecloud/examples
CACHE=/var/tmp/den-chtest
BASE=${CH_BATS_BASE:-/var/tmp/den-test-mpi-bookworm}
TUSER=${CH_BATS_USER:-dentest}
TIMEOUT=${CH_BATS_TIMEOUT:-900}
DEFAULT_FILES=(ch-run_misc.bats ch-run_isolation.bats ch-run_uidgid.bats
               ch-run_escalated.bats ch-run_join.bats)

die () { printf 'ch_bats.sh: %s\n' "$1" >&2; exit 2; }
say () { printf 'ch_bats.sh: %s\n' "$1" >&2; }

usage () {
    sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" | sed -n '4,12p'
    exit "${1:-2}"
}

## Arguments

do_ch=yes
do_den=yes
files=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --den-only) do_ch= ;;
        --ch-only)  do_den= ;;
        -h|--help)  usage 0 ;;
        -*)         usage 2 ;;
        *)          files+=("$1") ;;
    esac
    shift
done
[[ -n $do_ch || -n $do_den ]] || die '--den-only and --ch-only exclude each other'
[[ ${#files[@]} -gt 0 ]] || files=("${DEFAULT_FILES[@]}")
bats_files=()
for f in "${files[@]}"; do
    case $f in
        /*)     p=$f ;;
        run/*)  p=${CHTEST_DIR}/$f ;;
        *)      p=${CHTEST_DIR}/run/$f ;;
    esac
    [[ -f $p ]] || die "no such bats file: $f"
    bats_files+=("$p")
done

## Prerequisites

[[ $(id -u) -eq 0 ]] || die 'must run as root (bats runs as the test user)'
for c in bats ch-run setpriv unshare flock gcc timeout; do
    command -v "$c" > /dev/null || die "not found: $c"
done
[[ -f ${CHTEST_DIR}/common.bash ]] || die "charliecloud-tests missing: ${CHTEST_DIR}"
[[ -d ${EXAMPLES}/chtest ]] || die "charliecloud examples missing: ${EXAMPLES}/chtest"
id "$TUSER" > /dev/null 2>&1 || die "no user $TUSER"
[[ -x ${BASE}/usr/bin/python3 ]] || die "base image with python3 missing: $BASE"
BUSYBOX=$(command -v busybox || true)
[[ -n $BUSYBOX ]] || die 'busybox (busybox-static) not found'
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3) || die 'python3 not found'
if [[ -n $do_den ]]; then
    DENO=${DENO:-${REPO}/.tools/bin/deno}
    [[ -x $DENO ]] || DENO=$(command -v deno) || die 'deno not found'
    DENO=$(readlink -f "$DENO")
fi
THOME=$(getent passwd "$TUSER" | cut -d: -f6)
TUID=$(id -u "$TUSER")
TGID=$(id -g "$TUSER")
TGROUP=$(id -gn "$TUSER")
NOBODY_GROUP=$(id -gn nobody)

## Images

# Print a hash of everything the cached images are made from.
inputs_hash () {
    {
        declare -f build_images
        printf '%s\n' "$BASE" "$BUSYBOX" "$(gcc --version | head -n1)"
        cat "${EXAMPLES}"/chtest/* "${CHTEST_DIR}/Dockerfile.argenv"
        sha256sum "$BUSYBOX"
        find "$BASE" -printf '%P %y %s %T@ %m %U %G\n' | LC_ALL=C sort
    } | sha256sum | cut -d' ' -f1
}

# Build chtest and argenv into directory $1.
build_images () {
    local out=$1 img a
    mkdir -p "$out"

    # chtest, after examples/chtest/Build, on Debian instead of Alpine. Files
    # in the copy are hardlinks into $BASE: replace, never write in place.
    img=${out}/chtest
    cp -al "$BASE" "$img"
    rm -rf "${img:?}"/dev/* "${img:?}"/dev/.[!.]*
    for a in 0 1 2 3 4 5 6 7 8 9; do mkdir -p "${img}/mnt/${a}"; done
    echo "tmpfs and host home are not overmounted" > "${img}/home/overmount-me"
    rm -f "${img}/usr/bin/ch-ssh"
    touch "${img}/usr/bin/ch-ssh"
    mkdir "${img}/test"
    cp "${EXAMPLES}"/chtest/* "${img}/test/"
    for a in chroot-escape mknods setgroups setuid; do
        gcc -std=c11 -Wall -Werror -static -o "${img}/test/${a}" \
            "${EXAMPLES}/chtest/${a}.c"
    done
    chmod 755 "${img}"/test/*.py "${img}/test/printns"
    touch "${img}/dev/deleteme"
    mkdir -p "${img}/mnt/dev"
    touch "${img}/mnt/dev/dontdeleteme"
    touch "${img}/.hiddenfile1" "${img}/..hiddenfile2" "${img}/...hiddenfile3"
    rm -f "${img}/dev/deleteme"   # ch-convert would clean /dev
    ln -s ../bind4 "${img}/mnt/bind4"
    ln -s ./doesnotexist "${img}/mnt/link-b0rken-rel"
    ln -s /doesnotexist "${img}/mnt/link-b0rken-abs"
    ln -s /tmp "${img}/mnt/link-bad-abs"
    ln -s ../.. "${img}/mnt/link-bad-rel"
    rm -f "${img}/etc/resolv.conf" "${img}/etc/resolv.conf.real"
    touch "${img}/etc/resolv.conf.real"
    ln -s /etc/resolv.conf.real "${img}/etc/resolv.conf"
    touch "${img}/etc/hosts.new" && mv "${img}/etc/hosts.new" "${img}/etc/hosts"
    rm -f "${img}/etc/os-release"
    printf '%s\n' 'NAME="Alpine Linux"' 'ID=alpine' 'VERSION_ID=3.9.6' \
                  'PRETTY_NAME="Alpine Linux v3.9"' > "${img}/etc/os-release"
    # (maxperms_* fixtures are export tests only; a world-writable file under
    # a root-owned cache is not worth it.)

    # argenv: FROM 00_tiny (busybox) + the ENV lines of Dockerfile.argenv.
    img=${out}/argenv
    mkdir -p "$img"/{bin,dev,etc,home,proc,sys,tmp,usr/bin,ch}
    for a in 0 1 2 3 4 5 6 7 8 9; do mkdir -p "${img}/mnt/${a}"; done
    cp "$BUSYBOX" "${img}/bin/busybox"
    for a in $("$BUSYBOX" --list); do
        [[ $a = busybox ]] || ln -s busybox "${img}/bin/${a}"
    done
    touch "$img"/etc/{passwd,group,hosts,resolv.conf}
    printf 'chse_env1_df=env1\nchse_env2_df=env2 env1\n' \
           > "${img}/ch/environment"

    chmod -R go+rX,go-w "$out"
}

ensure_images () {
    local want have
    mkdir -p "$(dirname "$CACHE")"
    exec 9> "${CACHE}.lock"
    flock 9
    want=$(inputs_hash)
    have=$(cat "${CACHE}/.inputs" 2>/dev/null || true)
    if [[ $want != "$have" || ! -d ${CACHE}/chtest || ! -d ${CACHE}/argenv ]]; then
        say "building images in $CACHE"
        rm -rf --one-file-system "${CACHE}.new"
        build_images "${CACHE}.new" >&2
        echo "$want" > "${CACHE}.new/.inputs"
        chmod 755 "${CACHE}.new"
        rm -rf --one-file-system "$CACHE"
        mv "${CACHE}.new" "$CACHE"
    fi
}

## Per-run setup

work=$(mktemp -d /tmp/ch_bats.XXXXXX)
chmod 755 "$work"
cleanup () {
    local rc=$?
    if [[ -n ${CH_BATS_KEEP:-} ]]; then
        say "kept $work"
    else
        rm -rf --one-file-system "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_images

# Supplementary group for the test user (setgid test, make-perms-test).
supp_gid=$(id -G "$TUSER" | tr ' ' '\n' | grep -vx "$TGID" | head -n1 || true)
lend_group=
if [[ -z $supp_gid ]]; then
    supp_gid=$(getent group users | cut -d: -f3 || true)
    [[ -n $supp_gid ]] || die "$TUSER has no supplementary group and no group users exists"
    lend_group=users
fi
groups_arg=$(id -G "$TUSER" | tr ' ' ',')
[[ -n $lend_group ]] && groups_arg+=",${supp_gid}"

# CH_TEST_PERMDIRS: one for both tools.
permdir=${work}/perms_test
if [[ -n $lend_group ]]; then
    awk -F: -v OFS=: -v g="$lend_group" -v u="$TUSER" \
        '$1 == g { $4 = ($4 == "" ? u : $4 "," u) } { print }' /etc/group \
        > "${work}/group"
    unshare --mount /bin/sh -c 'mount --bind "$1" /etc/group && exec "$2" "$3" "$4" "$5" nobody' \
            sh "${work}/group" "$PY" "${CHTEST_DIR}/make-perms-test" "$permdir" "$TUSER" \
            > "${work}/make-perms-test.log" 2>&1 \
        || { cat "${work}/make-perms-test.log" >&2; die 'make-perms-test failed'; }
else
    "$PY" "${CHTEST_DIR}/make-perms-test" "$permdir" "$TUSER" nobody \
          > "${work}/make-perms-test.log" 2>&1 \
        || { cat "${work}/make-perms-test.log" >&2; die 'make-perms-test failed'; }
fi

# Set up the directories for one tool ($1 = ch or den).
prepare () {
    local tool=$1 d=${work}/$1
    mkdir -p "$d"/{img,tar,tmp_,bin,tap}
    cp -al "${CACHE}/chtest" "${d}/img/chtest"
    cp -al "${CACHE}/argenv" "${d}/img/argenv"
    mkdir -p "${d}/img/bind1" "${d}/img/bind2" "${d}/img/mounts"
    touch "${d}/img/bind1/file1" "${d}/img/bind2/file2"
    # Directories only: files are hardlinks into the cache.
    find "${d}/img" -type d -exec chown "${TUID}:${TGID}" {} +
    chown "${TUID}:${TGID}" "${d}"/img/bind?/file? "${d}/tar" "${d}/tmp_"
    chmod 700 "${d}/tmp_"
    if [[ $tool = den ]]; then
        # $ch_bin must hold ch-run (tests put "$ch_bin" alone in $PATH) and a
        # real ch-ssh (test '/usr/bin/ch-ssh' compares sizes).
        cat > "${d}/bin/ch-run" <<EOF
#!/bin/bash
# ch-run shim made by tests/ch_bats.sh: runs den; rewrites den[PID]: to ch-run[PID]: on stderr.
'${DENO}' run -A --no-lock '${REPO}/cli/main.ts' run "\$@" 2> >(exec /bin/sed -u -E 's/^den\\[([0-9]+)\\]:/ch-run[\\1]:/' >&2)
rc=\$?; wait \$! 2> /dev/null; exit \$rc
EOF
        chmod 755 "${d}/bin/ch-run"
        cp /usr/bin/ch-ssh "${d}/bin/ch-ssh"
    fi
}

# Environment for bats, as ch-test would set it up ($1 = ch or den).
bats_env () {
    local tool=$1 d=${work}/$1 chbin
    if [[ $tool = den ]]; then chbin=${d}/bin; else chbin=$(dirname "$(command -v ch-run)"); fi
    printf '%s\n' \
        "HOME=${THOME}" "USER=${TUSER}" "LOGNAME=${TUSER}" "SHELL=/bin/bash" \
        "PATH=${chbin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
        "LC_ALL=C" "TMP_=${d}/tmp_" \
        "DENO_DIR=${THOME}/.cache/deno" "NO_COLOR=1" \
        "CH_TEST_IMGDIR=${d}/img" "CH_TEST_TARDIR=${d}/tar" \
        "CH_TEST_PERMDIRS=${permdir}" "CH_TEST_BUILDER=none" \
        "CH_TEST_SCOPE=standard" "CH_TEST_PACK_FMT=tar-unpack" \
        "ch_bin=${chbin}" "ch_lib=/usr/lib/charliecloud" "ch_libc=glibc" \
        "CHTEST_INSTALLED=yes" "CHTEST_DIR=${CHTEST_DIR}" \
        "CHTEST_EXAMPLES_DIR=${EXAMPLES}"
}

# Run one bats file for one tool. $1 = tool, $2 = bats file, $3 = label,
# rest = extra VAR=VALUE.
run_bats () {
    local tool=$1 file=$2 label=$3 d=${work}/$1 rc=0
    shift 3
    local -a envs
    mapfile -t envs < <(bats_env "$tool")
    envs+=("$@")
    # Leftover join IPC of the test user (from an earlier tool) would fail
    # 'ch-run --join: /dev/shm starts clean'.
    find /dev/shm -maxdepth 1 -user "$TUSER" -name '*ch-run*' -delete 2>/dev/null || true
    # Test 'broken image errors' counts the test user's ch-run_{passwd,group}*
    # left in /tmp by its own failing runs; start from none.
    find /tmp -maxdepth 1 -user "$TUSER" \( -name 'ch-run_passwd*' -o -name 'ch-run_group*' \) \
         -delete 2>/dev/null || true
    say "$tool: $label"
    ( cd "$CHTEST_DIR" \
      && timeout -k 10 "$TIMEOUT" \
           setpriv --reuid="$TUID" --regid="$TGID" --groups="$groups_arg" \
           env -i "${envs[@]}" bats --tap "$file" ) \
        > "${d}/tap/${label//\//_}.tap" 2>&1 || rc=$?
    [[ $rc -ne 124 && $rc -ne 137 ]] \
        || printf 'not ok 999 (bats timed out after %ss)\n' "$TIMEOUT" \
                  >> "${d}/tap/${label//\//_}.tap"
    printf '%s\t%s\n' "$label" "$file" >> "${d}/labels"
}

run_tool () {
    local tool=$1 f base u g
    prepare "$tool"
    if [[ $tool = den ]]; then
        # Warm deno's module cache so the first test doesn't pay for it.
        setpriv --reuid="$TUID" --regid="$TGID" --init-groups \
                env -i HOME="$THOME" DENO_DIR="${THOME}/.cache/deno" \
                "${work}/den/bin/ch-run" --version > /dev/null 2>&1 \
            || say 'warning: den run --version failed'
    fi
    for f in "${bats_files[@]}"; do
        base=$(basename "$f")
        if [[ $base = ch-run_uidgid.bats ]]; then
            run_bats "$tool" "$f" "$base"
            for u in "$TUSER" root nobody; do
                for g in "$TGROUP" root "$NOBODY_GROUP"; do
                    run_bats "$tool" "$f" "${base}[${u}/${g}]" \
                             "GUEST_USER=$u" "GUEST_GROUP=$g"
                done
            done
        else
            run_bats "$tool" "$f" "$base"
        fi
    done
}

# den only: copies of the bats files with den's deliberate differences
# allowed, so a test that stops at one of them still checks the rest:
# `[[ $status -eq 1 ]]` also accepts 31 (den's own errors) and 49 (command
# could not be started), and the `[[ -e /dev/shm/ch-run_* ]]` lines are
# dropped (den's --join uses an abstract socket), as are the --ch-ssh checks
# (gone from current Charliecloud) and the count of ch-run's leftover
# passwd/group temporary files (den leaves none). Reported as FILE[adjusted].
run_adjusted () {
    local d=${work}/den/adj f base
    mkdir -p "${d}/run"
    ln -s "${CHTEST_DIR}/common.bash" "${d}/common.bash"
    for f in "${bats_files[@]}"; do
        base=$(basename "$f")
        sed -E -e 's/\[\[ \$status -eq 1 \]\]/[[ $status -eq 1 || $status -eq 31 || $status -eq 49 ]]/' \
               -e '/^ *\[\[ -e \/dev\/shm\/ch-run_/d' \
               -e '/^ *run ch-run --ch-ssh "\$img"/,/ch-ssh not in image/d' \
               -e '/ch-run_\{passwd,group\}\*|-name .ch-run_(passwd|group)\*./d' \
               "$f" > "${d}/run/${base}"
        if ! cmp -s "$f" "${d}/run/${base}"; then
            run_bats den "${d}/run/${base}" "${base}[adjusted]"
        fi
    done
}

[[ -n $do_ch ]] && run_tool ch
[[ -n $do_den ]] && { run_tool den; run_adjusted; }

## Report

"$PY" - "$work" "${do_ch:+ch}" "${do_den:+den}" <<'EOF'
import os, re, sys

work, tools = sys.argv[1], [t for t in sys.argv[2:] if t]

def test_names(bats_file):
    """Test names as written in the .bats file (TAP shows them after $-expansion)."""
    return [m.group(2) for m in re.finditer(r"^@test (['\"])(.*)\1 *\{",
                                             open(bats_file).read(), re.M)]

def parse(path, names):
    """TAP from bats -> ordered {name: (status, detail lines)}."""
    res, cur = {}, None
    for line in open(path, errors="replace").read().splitlines():
        m = re.match(r"^(not ok|ok) (\d+) (.*)$", line)
        if m:
            name, status = m.group(3), "fail" if m.group(1) == "not ok" else "pass"
            s = re.search(r" # skip( \((.*)\)| (.*))?$", name)
            if s and status == "pass":
                status = "skip"
                name = name[:s.start()]
            if 1 <= int(m.group(2)) <= len(names):
                name = names[int(m.group(2)) - 1]
            cur = [status, []]
            res[name] = cur
        elif cur is not None and line.startswith("#"):
            cur[1].append(line[2:] if line.startswith("# ") else line[1:])
        elif line.startswith("1.."):
            pass
        elif cur is None and line.strip():
            res.setdefault("(bats setup)", ["fail", []])[1].append(line)
    return res

results = {}   # tool -> {label: {name: [status, detail]}}
labels = []
for t in tools:
    results[t] = {}
    for line in open(os.path.join(work, t, "labels")).read().splitlines():
        lab, path = line.split("\t")
        if lab not in labels:
            labels.append(lab)
        results[t][lab] = parse(os.path.join(work, t, "tap", lab.replace("/", "_") + ".tap"),
                                test_names(path))

# Tests den cannot pass through this harness, whatever den does.
NA = {
    "ch-run refuses to run if setgid":
        "copies $ch_runfile and makes it setgid; for den that is the bash shim, "
        "and the kernel ignores setgid on scripts (tests/run_test.ts checks den's refusal)",
    "/usr/bin/ch-ssh":
        "--ch-ssh is gone from current Charliecloud and not wanted in den (issue 6)",
}
strict = os.environ.get("CH_BATS_STRICT") == "1"

def shm_failed(detail):
    return any("/dev/shm/ch-run_" in l and "failed" in l for l in detail)

def get(t, lab, n):
    return results.get(t, {}).get(lab, {}).get(n, ["-", []])

rows, regress, design, na, denskip, chfail = [], [], [], [], [], []
for lab in labels:
    if lab.endswith("[adjusted]"):
        continue
    names = []
    for t in tools:
        for n in results[t].get(lab, {}):
            if n not in names:
                names.append(n)
    for n in names:
        st = {t: get(t, lab, n) for t in tools}
        adj = get("den", lab + "[adjusted]", n)
        key = "%s: %s" % (lab, n)
        mark = ""
        if "ch" in st and "den" in st and st["ch"][0] == "pass":
            d = st["den"]
            if d[0] == "skip":
                mark = "den skip"; denskip.append((key, d[1]))
            elif d[0] != "pass":
                if n in NA:
                    mark = "n/a (harness)"; na.append((key, NA[n]))
                elif not strict and adj[0] == "pass":
                    if shm_failed(d[1]):
                        why = "/dev/shm"
                    elif any("--ch-ssh" in l for l in d[1]):
                        why = "--ch-ssh, gone from current Charliecloud"
                    elif any("ch-run_passwd" in l for l in d[1]):
                        why = "den leaves no temporary passwd/group files"
                    elif any("$status -eq 1 ]]" in l and "failed" in l for l in d[1]):
                        why = "exit 31/49"
                    else:
                        why = "follows from an earlier by-design failure?"
                    mark = "by design (%s)" % why; design.append((key, why))
                else:
                    mark = "REGRESSION"; regress.append((key, d[1], adj))
        if "ch" in st and st["ch"][0] == "fail":
            chfail.append((key, st["ch"][1]))
        cols = {t: st[t][0] for t in tools}
        if "den" in tools:
            cols["adj"] = adj[0] if lab + "[adjusted]" in results["den"] else ""
        rows.append((key, cols, mark))

cols = tools + (["adj"] if "den" in tools else [])
heads = {"ch": "ch-run", "den": "den", "adj": "den-adj"}
w = max([len(r[0]) for r in rows] + [4])
hdr = "%-*s" % (w, "TEST") + "".join("  %-7s" % heads[c] for c in cols)
print(hdr + "  NOTE")
print("-" * (len(hdr) + 24))
for key, st, mark in rows:
    print("%-*s" % (w, key) + "".join("  %-7s" % st[c] for c in cols) + ("  " + mark if mark else ""))
if "den" in tools:
    print("(den-adj: den on the [adjusted] copy, deliberate differences allowed; blank: no such copy)")
print()
for t in tools:
    c = {}
    for _, st, _ in rows:
        c[st[t]] = c.get(st[t], 0) + 1
    print("%-6s: %s" % ("ch-run" if t == "ch" else t,
                        ", ".join("%d %s" % (c.get(k, 0), k) for k in ("pass", "fail", "skip"))))

def banner(title):
    print("\n" + "=" * 78 + "\n" + title + "\n" + "=" * 78)

def indent(lines):
    for l in lines:
        print("    " + l)

if chfail:
    banner("ch-run FAILURES (fixture or environment problems; not compared)")
    for key, detail in chfail:
        print("\n--- " + key)
        indent(detail)
if denskip:
    banner("ch-run PASS, den SKIP")
    for key, detail in denskip:
        print("  " + key)
if na:
    banner("NOT APPLICABLE to den through this harness")
    for key, why in na:
        print("  %s\n      %s" % (key, why))
if design:
    banner("BY DESIGN: fail only on den's deliberate differences; pass in FILE[adjusted]\n"
           "(exit 31/49 where ch-run 0.31 exits 1; --join without /dev/shm files)")
    for key, why in design:
        print("  %s  [%s]" % (key, why))
if regress:
    banner("DEN REGRESSIONS: pass with ch-run, fail with den (assertion and den's output)")
    for key, detail, adj in regress:
        print("\n--- " + key)
        indent(detail)
        if adj[0] == "fail" and adj[1] != detail:
            print("  [adjusted run, deliberate differences allowed:]")
            indent(adj[1])
print("\n%d regression(s), %d by design, %d n/a, %d den skip(s)"
      % (len(regress), len(design), len(na), len(denskip)))
sys.exit(1 if regress else 0)
EOF
