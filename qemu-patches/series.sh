#!/bin/sh
# series.sh check|print VERSION WORKDIR
# Builds the series as git commits on a pristine Debian QEMU tree in
# WORKDIR, self-contained: the crate (with meson-glue/) folded into the
# patch that adds the commands as monitor/hotplug/, the qtest file from
# tests/qtest/ into its patch.  Then
#   check: runs checkpatch.pl on every patch and builds every prefix;
#   print: prints the series as git format-patch output with a cover letter.
set -eu
mode=$1 version=$2 work=$3
top=$(cd "$(dirname "$0")/.." && pwd)
src=$work/src
git_() { git -C "$src" -c user.name=qemu-monitor-hotplug -c user.email=qmh@localhost "$@"; }

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
        git_ am -q --keep-cr "$p" >&2 || { echo "series: $(basename "$p") does not apply" >&2; exit 1; }
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
    commits=$(git_ rev-list --reverse base.."$tip")
    fail=0
    for c in $commits; do
        subject=$(git_ log -1 --format=%s "$c")
        if ! git_ format-patch -1 --stdout "$c" | perl "$src/scripts/checkpatch.pl" -q - >&2; then
            echo "series: checkpatch.pl complains about: $subject" >&2; fail=1
        fi
    done
    [ $fail = 0 ] || exit 1
    echo "series: checkpatch.pl is clean on every patch"
    # every prefix builds: configure once on the base, then build each commit
    git_ checkout -q base
    if [ ! -f "$work/qemu/build.ninja" ]; then
        mkdir -p "$work/qemu"
        (cd "$work/qemu" && "$src/configure" --python="$top/build/venv/bin/python3" \
            --target-list=x86_64-softmmu --without-default-features --without-default-devices \
            --disable-docs --disable-tcg --enable-kvm --disable-install-blobs --disable-rust \
            --enable-tools > configure.log 2>&1) || { tail -20 "$work/qemu/configure.log"; exit 1; }
    fi
    for c in $commits; do
        git_ checkout -q "$c"
        echo "series: building $(git_ log -1 --format=%s)"
        ninja -C "$work/qemu" qemu-system-x86_64 storage-daemon/qemu-storage-daemon > "$work/build.log" 2>&1 ||
            { tail -30 "$work/build.log"; echo "series: does not build: $(git_ log -1 --format=%s)"; exit 1; }
    done
    echo "series: every prefix builds ($(echo $commits | wc -w) patches)"
    ;;
*) echo "usage: $0 check|print VERSION WORKDIR" >&2; exit 2 ;;
esac
