#!/bin/sh
# series.sh check|print VERSION WORKDIR
# series.sh import VERSION SRC [APPLIED]
# series.sh export SRC [DIR]
# check and print build the series as git commits on a pristine Debian
# QEMU tree in WORKDIR, self-contained: the crate (with meson-glue/)
# folded into the patch that adds the commands as monitor/hotplug/, the
# qtest file from tests/qtest/ into its patch.  Then
#   check: checks that the mbox applies with git am and that exporting
#          the plain series gives qemu-patches/ back byte for byte, runs
#          checkpatch.pl on every patch, builds the prefixes before the crate, the whole series, and
#          QEMU's manual (the QMP reference) at the tip;
#   print: prints the series as git format-patch output with a cover letter.
# import and export are the git workflow on a QEMU tree (make
# patches-import, make patches-export, docs/upstreaming.md):
#   import: turns SRC into a git tree: pristine QEMU committed and tagged
#           "base" (patches in the directory APPLIED, applied with
#           patch(1), are taken off first), then each patch of
#           qemu-patches/ as a commit (git am);
#   export: writes the commits base..HEAD of SRC as qemu-patches/ (or DIR).
set -eu
mode=$1
top=$(cd "$(dirname "$0")/.." && pwd)
git_() { git -C "$src" -c user.name=qemu-monitor-hotplug -c user.email=qmh@localhost "$@"; }

# Marks a tree made by import (not a QEMU checkout of the user's own).
marker=.git/qmh-series

# git am every patch of qemu-patches/ onto the tree's HEAD
am_series() {
    for p in "$top"/qemu-patches/0*.patch; do
        git_ am -q --keep-cr "$p" >&2 ||
            { git_ am --abort; echo "series: $(basename "$p") does not apply" >&2; exit 1; }
    done
}

# the commits base..HEAD as patch files in $1, named and numbered as
# qemu-patches/ has them (blob ids abbreviated to 8 digits whatever the
# size of the repository)
export_to() {
    rm -f "$1"/0*.patch
    git_ -c core.abbrev=8 format-patch -q --zero-commit --no-signature --numbered \
        -o "$1" base..HEAD
}

# exit 1 unless the patch files in $1 are qemu-patches/'s, byte for byte
same_as_series() {
    [ "$(cd "$1" && ls 0*.patch)" = "$(cd "$top/qemu-patches" && ls 0*.patch)" ] || return 1
    for f in "$top"/qemu-patches/0*.patch; do
        cmp -s "$f" "$1/$(basename "$f")" || return 1
    done
}

case $mode in
import)
    version=$2 src=$3 applied=${4:-}
    if [ -d "$src/.git" ]; then
        [ -f "$src/$marker" ] ||
            { echo "series: $src is a git tree of its own; import works on an unpacked QEMU" >&2; exit 1; }
        [ -z "$(git_ status --porcelain --untracked-files=no)" ] ||
            { echo "series: $src has uncommitted changes; commit or drop them first" >&2; exit 1; }
        if [ -z "${FORCE:-}" ]; then
            tmp=$(mktemp -d)
            export_to "$tmp"
            same_as_series "$tmp" || { rm -rf "$tmp"; echo "series: the commits in $src differ" \
                "from qemu-patches/: make patches-export first, or FORCE=1 to drop them" >&2; exit 1; }
            rm -rf "$tmp"
        fi
        git_ checkout -q -B series base
        git_ reset -q --hard base
    else
        # take off what patch(1) applied, newest first: the pristine tree
        if [ -n "$applied" ] && [ -d "$applied" ]; then
            for p in $(ls "$applied" | sort -r); do
                patch -d "$src" -p1 -R -s --batch --no-backup-if-mismatch < "$applied/$p" ||
                    { echo "series: cannot take $p off $src" >&2; exit 1; }
            done
        fi
        # the project's symlinks are not QEMU's
        rm -f "$src/monitor/hotplug" "$src/tests/qtest/monitor-hotplug-test.c"
        git_ init -q -b series
        # nor is what make QEMU_RUST=1 puts there (meson-glue/qemu-rust/crates.py)
        { echo /configs/devices/x86_64-softmmu/qmh-rust-lab.mak
          [ ! -f "$src/subprojects/packagefiles/.written-by-qemu-monitor-hotplug" ] ||
              echo /subprojects/packagefiles/; } >> "$src/.git/info/exclude"
        git_ add -A >/dev/null
        git_ commit -q -m "QEMU $version"
        git_ tag -f base >/dev/null
        printf '/monitor/hotplug\n/tests/qtest/monitor-hotplug-test.c\n' >> "$src/.git/info/exclude"
        echo "$version" > "$src/$marker"
    fi
    am_series
    echo "series: $src is QEMU $version (tag base) with $(git_ rev-list --count base..HEAD) commits"
    exit 0 ;;
export)
    src=$2 out=${3:-$top/qemu-patches}
    [ -f "$src/$marker" ] || { echo "series: $src was not made by make patches-import" >&2; exit 1; }
    export_to "$out"
    if [ "$out" = "$top/qemu-patches" ]; then
        echo "series: wrote $(git_ rev-list --count base..HEAD) patches to qemu-patches/"
    fi
    exit 0 ;;
check|print) version=$2 work=$3 src=$3/src ;;
*) echo "usage: $0 check|print VERSION WORKDIR | import VERSION SRC [APPLIED] | export SRC [DIR]" >&2; exit 2 ;;
esac

# The crate's files as the series carries them in monitor/hotplug/.
crate_files="Cargo.toml Cargo.lock build.rs $(cd "$top" && git ls-files src)"

fold_crate() {
    h=$src/monitor/hotplug
    mkdir -p "$h/src"
    cp "$top/meson-glue/meson.build" "$top/meson-glue/cargo-build.py" "$h/"
    for f in $crate_files; do mkdir -p "$(dirname "$h/$f")" && cp "$top/$f" "$h/$f"; done
    # QEMU's tree has no benches/ for the project's [[bench]] target
    python3 -c 'import sys; t = open(sys.argv[1]).read().split("\n# `make bench`")[0]
open(sys.argv[1], "w").write(t.rstrip("\n") + "\n")' "$h/Cargo.toml"
    git_ add monitor/hotplug
    git_ commit -q --amend --no-edit
}

# what the series is made of, names included (a deleted file counts)
inputs=$(cd "$top" && { git ls-files -s qemu-patches tests/qtest meson-glue $crate_files;
                        cat qemu-patches/* tests/qtest/* meson-glue/* $crate_files; } 2>/dev/null |
         sha256sum | cut -d' ' -f1)
if [ "$(cat "$work/stamp" 2>/dev/null)" != "$inputs" ]; then
    "$top/meson-glue/fetch-qemu.sh" "$version" "$src" "$work/downloads" "$top"/build/downloads* >&2
    git_ init -q
    git_ add -A >/dev/null && git_ commit -q -m "QEMU $version"
    git_ tag base
    for p in "$top"/qemu-patches/0*.patch; do
        git_ am -q --keep-cr "$p" >&2 ||
            { git_ am --abort; echo "series: $(basename "$p") does not apply" >&2; exit 1; }
        case $p in
        *-monitor-add-monitor-add-monitor-remove-and-query-mon.patch)
            # the crate and its meson glue live in this project: fold them
            # in as monitor/hotplug/, without the project's benchmarks
            fold_crate ;;
        *-tests-qtest-add-monitor-hotplug-test.patch)
            # the qtest lives in tests/qtest/ of this project: fold it in
            cp "$top/tests/qtest/monitor-hotplug-test.c" "$src/tests/qtest/"
            git_ add tests/qtest/monitor-hotplug-test.c
            git_ commit -q --amend --no-edit ;;
        esac
    done
    git_ cat-file -e HEAD:tests/qtest/monitor-hotplug-test.c 2>/dev/null ||
        { echo "series: the qtest was not folded into its patch" >&2; exit 1; }
    git_ cat-file -e HEAD:monitor/hotplug/Cargo.toml 2>/dev/null ||
        { echo "series: the crate was not folded into its patch" >&2; exit 1; }
    git_ branch -f series
    echo "$inputs" > "$work/stamp"
fi

tip=$(git_ rev-parse series)

mbox() {
    git_ format-patch -q --stdout --cover-letter --zero-commit --no-signature base.."$tip" |
    python3 -c '
import sys
cover = open(sys.argv[1]).read().split("\n", 1)
text = sys.stdin.read()
text = text.replace("*** SUBJECT HERE ***", cover[0], 1)
text = text.replace("*** BLURB HERE ***", cover[1].strip(), 1)
sys.stdout.write(text)' "$top/qemu-patches/cover-letter.txt"
}

case $mode in
print) mbox ;;
check)
    # what a reviewer gets applies to pristine QEMU as it is
    mbox > "$work/series.mbox"
    git_ am --abort 2>/dev/null || true
    git_ checkout -q --detach base
    git_ am -q --empty=drop "$work/series.mbox" >&2 ||
        { git_ am --abort; echo "series: the mbox does not git am" >&2; exit 1; }
    [ "$(git_ rev-parse HEAD^{tree})" = "$(git_ rev-parse "$tip^{tree}")" ] ||
        { echo "series: git am of the mbox gives another tree" >&2; exit 1; }
    [ "$(git_ rev-list --count base..HEAD)" = "$(git_ rev-list --count base.."$tip")" ] ||
        { echo "series: git am of the mbox gives another number of commits" >&2; exit 1; }
    echo "series: the mbox applies with git am to pristine QEMU $version"
    # the git workflow's round trip: the plain series, imported and
    # exported (make patches-import, make patches-export), is qemu-patches/
    git_ checkout -q -B plain base
    am_series
    mkdir -p "$work/export"
    export_to "$work/export"
    same_as_series "$work/export" ||
        { diff -r "$top/qemu-patches" "$work/export" | head -20 >&2
          echo "series: exporting the imported series does not give qemu-patches/ back" >&2; exit 1; }
    echo "series: import and export of the series give qemu-patches/ back byte for byte"
    commits=$(git_ rev-list --reverse base.."$tip")
    fail=0
    for c in $commits; do
        subject=$(git_ log -1 --format=%s "$c")
        if ! git_ format-patch -1 --stdout "$c" | perl "$src/scripts/checkpatch.pl" -q - >&2; then
            echo "series: checkpatch.pl complains about: $subject" >&2; fail=1
        fi
        # QEMU takes a patch whose author signed it off
        if ! git_ log -1 --format=%B "$c" | grep -qxF "Signed-off-by: $(git_ log -1 --format='%an <%ae>' "$c")"; then
            echo "series: its author did not sign off: $subject" >&2; fail=1
        fi
    done
    [ $fail = 0 ] || exit 1
    echo "series: checkpatch.pl is clean on every patch, and every author signed it off"
    series_build() {
        git_ checkout -q "$1"
        t0=$(date +%s)
        ninja -C "$work/qemu" qemu-system-x86_64 storage-daemon/qemu-storage-daemon > "$work/build.log" 2>&1 ||
            { tail -30 "$work/build.log"; echo "series: does not build: $(git_ log -1 --format=%s)"; exit 1; }
        echo "series: built in $(($(date +%s) - t0)) s: $(git_ log -1 --format=%s)"
    }
    # every prefix builds: configure once on the base, then build each commit
    # (the docs need Sphinx: Debian's, through the venv on Debian's
    # python that the Makefile makes, build/docs-venv)
    git_ checkout -q base
    flags="--python=$top/build/docs-venv/bin/python3 --target-list=x86_64-softmmu
        --without-default-features --without-default-devices --enable-docs --disable-tcg
        --enable-kvm --disable-install-blobs --disable-rust --enable-tools"
    if [ "$(cat "$work/qemu/qmh-config" 2>/dev/null)" != "$(echo $flags)" ]; then
        rm -rf "$work/qemu" && mkdir -p "$work/qemu"
        # shellcheck disable=SC2086 # flags are words
        (cd "$work/qemu" && "$src/configure" $flags > configure.log 2>&1) ||
            { tail -20 "$work/qemu/configure.log"; exit 1; }
        echo $flags > "$work/qemu/qmh-config"
    fi
    # The crate comes whole with the commands patch and uses what the
    # later patches add (command lists, close actions, every monitor an
    # object), so the prefixes from that patch to the last but one do not
    # build yet: every prefix before it builds, and the whole series.
    crate=$(git_ log --reverse --format=%H --diff-filter=A base.."$tip" -- monitor/hotplug/Cargo.toml | head -n 1)
    built=0
    for c in $commits; do
        [ "$c" = "$crate" ] && break
        built=$((built + 1))
        series_build "$c"
    done
    series_build "$tip"
    echo "series: the $built patches before the crate build one by one, and the whole series builds"
    # QEMU's manual with the QMP reference, from the schema's doc
    # comments, as upstream's CI builds it (a git tree: warnings are errors)
    ninja -C "$work/qemu" docs/docs.stamp > "$work/docs.log" 2>&1 ||
        { tail -30 "$work/docs.log"; echo "series: the manual does not build"; exit 1; }
    grep -q 'monitor-add' "$work/qemu/docs/manual/interop/qemu-qmp-ref.html" ||
        { echo "series: the QMP reference has no monitor-add"; exit 1; }
    echo "series: the QMP reference builds: $work/qemu/docs/manual/interop/qemu-qmp-ref.html"
    ;;
esac
