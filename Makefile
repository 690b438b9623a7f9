# SPDX-License-Identifier: GPL-2.0-or-later
# qemu-monitor-hotplug: `make` builds the patched QEMU and runs the demo,
# `make check` runs every test.  Everything built lands under build/.
#
# Variants (each in its own directories, sharing build/venv):
#   QEMU_VERSION=V  another Debian source version (build/versions/V/...)
#   SANITIZE=1      QEMU built with --enable-asan --enable-ubsan (.../asan/)
#   TSAN=1          QEMU built with --enable-tsan (.../tsan/), ThreadSanitizer
#   LAB=1           the minimal QEMU for monitor tests (no TCG, no devices);
#                   the default for SANITIZE=1, TSAN=1 and other QEMU versions
#   BASELINE=1      QEMU without qemu-patches, for benchmarks (build/baseline/)
#   QEMU_SRC=/path  patch and build an existing QEMU tree instead of fetching
#   QEMU_RUST=1     QEMU's own Rust enabled too (.../qemu-rust/); its crates
#                   are fetched with the source and their meson files,
#                   which Debian's source drops, written (meson-glue/qemu-rust/)
#
# Install: make install [PREFIX=/usr/local] [DESTDIR=...], make uninstall.
# The series as git commits: make patches-import, make patches-export
# (docs/upstreaming.md).

DEFAULT_VERSION := 1:10.2.2+ds-1
MATRIX_VERSIONS := $(DEFAULT_VERSION) 1:10.0.13+ds-0+deb13u1
QEMU_VERSION ?= $(DEFAULT_VERSION)
QEMU_SRC ?=

B     := $(CURDIR)/build
VENV  := $(B)/venv
GUEST := $(B)/guest
PY    := $(VENV)/bin/python3
# Make cannot have ':' in file names: 1:10.0.13 -> 1-10.0.13
VTAG  := $(subst :,-,$(QEMU_VERSION))
VB    := $(if $(BASELINE),$(B)/baseline,$(if $(filter $(DEFAULT_VERSION),$(QEMU_VERSION)),$(B),$(B)/versions/$(VTAG)))
SRC   := $(if $(QEMU_SRC),$(abspath $(QEMU_SRC)),$(VB)/src)
OUT   := $(VB)$(if $(SANITIZE),/asan)$(if $(TSAN),/tsan)$(if $(QEMU_RUST),/qemu-rust)
QBUILD := $(OUT)/qemu
BIN   := $(OUT)/bin
# Patch stamps belong to a source tree: QEMU_SRC trees get their own
STAMPS := $(VB)/stamps$(if $(QEMU_SRC),/custom$(subst /,_,$(SRC)))
# The series is made on 10.2; on other versions a context line may differ
# where 10.2 renamed something next to a change (chr->be, chr->fe), and a
# fix of what only 10.2 has is left out: 10.0's QObject reference count
# is not atomic at all, so the patch that makes its assertion read it
# atomically does not apply there
PATCH_FUZZ := $(if $(filter-out $(DEFAULT_VERSION),$(QEMU_VERSION)),-F3)
PATCHES_10_2_ONLY := qobject-read-the-reference-count-atomically-in-qobje.patch
PATCHES := $(if $(BASELINE),,$(filter-out $(if $(filter 1:10.0%,$(QEMU_VERSION)),$(addprefix %-,$(PATCHES_10_2_ONLY))),\
	$(sort $(wildcard $(CURDIR)/qemu-patches/0*.patch))))
BINARIES := qemu-system-x86_64 storage-daemon/qemu-storage-daemon qemu-img qemu-io qemu-nbd
# QEMU's qtests that walk commands, objects, types and devices (the
# device and HMP walks on the product build only), and the series' own
QTESTS   := qmp-test qmp-cmd-test qom-test $(if $(LAB),,device-introspect-test test-hmp machine-none-test) \
	$(if $(BASELINE),,monitor-hotplug-test)
SUDO  := $(if $(filter 0,$(shell id -u)),,sudo)

# gcc-multilib: QEMU's x86 option ROMs (-kernel boot) are 32-bit code;
# seabios, ipxe-qemu: the firmware of x86's default machines and NICs;
# cpio: the test guest's initramfs; bindgen: QEMU's own Rust (QEMU_RUST=1);
# libgnutls28-dev: TLS socket chardevs, openssl: the tests' certificates;
# libclang-rt-14-dev: clang's libFuzzer and sanitizer runtimes, for
# check-fuzz-json (Debian's clang is 14)
DEB_PACKAGES := ninja-build libglib2.0-dev libpixman-1-dev flex bison \
	pkg-config libfdt-dev zlib1g-dev dpkg-dev libclang-dev clang \
	libclang-rt-14-dev libgnutls28-dev openssl \
	python3-venv socat valgrind gcc-multilib seabios ipxe-qemu cpio \
	bindgen $(DOCS_PACKAGES)
# QEMU's manual (the QMP reference), built by check-series
DOCS_PACKAGES := python3-sphinx python3-sphinx-rtd-theme
PY_PACKAGES  := 'meson>=1.5,<2' 'qemu.qmp==0.0.6'

# The product: x86_64's default machines and devices, TCG and KVM, the
# block tools, TLS (GnuTLS); firmware from Debian's packages and the
# option ROMs QEMU builds itself, found without -L.  The lab build (test-only variants):
# machine `none`, no devices, no TCG, which builds in a third of the time.
LAB ?= $(if $(or $(SANITIZE),$(TSAN),$(filter-out $(DEFAULT_VERSION),$(QEMU_VERSION))),1)
FIRMWARE_PATH := /usr/share/seabios:/usr/lib/ipxe/qemu:$(QBUILD)/pc-bios/optionrom
CONFIGURE_FLAGS := --target-list=x86_64-softmmu --without-default-features \
	--disable-docs --enable-kvm --enable-gnutls --disable-install-blobs $(if $(QEMU_RUST),--enable-rust,--disable-rust) --enable-tools \
	$(if $(QEMU_RUST),--disable-download $(if $(LAB),--with-devices-x86_64=qmh-rust-lab)) \
	$(if $(LAB),--without-default-devices --disable-tcg,--enable-tcg --firmwarepath=$(FIRMWARE_PATH)) \
	$(if $(SANITIZE),--enable-asan --enable-ubsan) \
	$(if $(TSAN),--enable-tsan --disable-werror)

# Sanitizer reports fail the run.  Leaks are valgrind's job (check-valgrind):
# QEMU's exit path leaves one-off allocations that LeakSanitizer reports.
export ASAN_OPTIONS  := detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS := halt_on_error=1:abort_on_error=1:print_stacktrace=1

ifneq ($(TSAN),)
ifneq ($(SANITIZE),)
$(error TSAN=1 and SANITIZE=1 do not go together: QEMU's TSan excludes ASan and UBSan)
endif
# ThreadSanitizer (QEMU's docs/devel/testing/main.rst and
# tests/docker/test-tsan): configured with --disable-werror as QEMU
# advises, at QEMU's usual -O2 -g rather than its -O0 (TSan is slow
# enough; gcc's symbolizer still names inlined frames).  The first
# report ends QEMU with exit code 66, which fails the test that runs it,
# as abort_on_error does for ASan; the reports go to files under
# TSAN_LOGS, so that a report from a QEMU whose exit status no test
# looks at is not lost either.  No deadlock detector (QEMU's setting: it
# does not cope with QEMU's locking); the longest history, so that both
# stacks of a race are there.  tests/tsan/suppressions.tsan says why
# each suppression is benign.
TSAN_LOGS := $(OUT)/tsan-reports
export TSAN_OPTIONS := halt_on_error=1:exitcode=66:detect_deadlocks=0:history_size=7:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/tsan/suppressions.tsan:log_path=$(TSAN_LOGS)/report
endif

# cargo and build.rs outside of meson: bindings follow the variant's
# tree.  The integration tests are QMP clients of the QEMU in
# QEMU_BIN_DIR: the legs that run after the product build take the
# product's build of them (TESTS_OF_PRODUCT sets TEST_*) instead of
# building their own, and only point them at their QEMU.
CARGO_ENV := QEMU_SRC_DIR=$(or $(TEST_SRC),$(SRC)) QEMU_BUILD_DIR=$(or $(TEST_QBUILD),$(QBUILD)) \
	QEMU_BIN_DIR=$(BIN) CARGO_TARGET_DIR=$(or $(TEST_CARGO),$(OUT)/cargo) $(if $(LAB),,QMH_GUEST_DIR=$(GUEST))
TESTS_OF_PRODUCT = TEST_SRC=$(SRC) TEST_QBUILD=$(QBUILD) TEST_CARGO=$(OUT)/cargo

comma := ,
# $(call apt_install,PACKAGES): install those that are missing
apt_install = missing=$$(for p in $(1); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	  if [ -n "$$missing" ]; then $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; fi
# $(call stage,NAME,COMMANDS): run COMMANDS, then print how long they took.
stage = @t0=$$(date +%s); echo "==> $(1)"; $(2); rc=$$?; \
	echo "==> $(1): $$(( $$(date +%s) - t0 ))s"; exit $$rc

.PHONY: all build guest demo check check-lint check-suite check-cargo check-qtest check-unit check-iotests check-python \
	check-fuzz-json check-valgrind check-install check-baseline check-qemu-rust check-sanitize check-tsan check-matrix check-versions check-series series since bench fuzz fuzz-input \
	install uninstall patches-import patches-export clean distclean FORCE

all: build demo

build: $(BIN)/.built

# --- 1. build dependencies ------------------------------------------------
$(B)/stamps/deps:
	$(call stage,deps,\
	  $(call apt_install,$(DEB_PACKAGES)) && \
	  command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup)"; exit 1; } && \
	  { [ -x $(PY) ] || python3 -m venv $(VENV); } && \
	  $(PY) -m pip install -q --disable-pip-version-check $(PY_PACKAGES) && \
	  mkdir -p $(B)/stamps && touch $@)

# Sphinx for QEMU's manual is Debian's, which only Debian's python sees:
# a venv on it, with its system packages and meson (check-series)
DOCS_VENV := $(B)/docs-venv
$(B)/stamps/docs-venv: | $(B)/stamps/deps
	$(call stage,docs venv,\
	  $(call apt_install,$(DOCS_PACKAGES)) && \
	  { [ -x $(DOCS_VENV)/bin/python3 ] || /usr/bin/python3 -m venv --system-site-packages $(DOCS_VENV); } && \
	  $(DOCS_VENV)/bin/python3 -m pip install -q --disable-pip-version-check '$(subst ',,$(firstword $(PY_PACKAGES)))' && \
	  touch $@)

# The crates for this host, fetched once per Cargo.lock; every cargo run
# after that works with the network off (CARGO_NET_OFFLINE)
$(B)/stamps/cargo-fetch: Cargo.lock | $(B)/stamps/deps
	$(call stage,cargo fetch,CARGO_NET_OFFLINE=false cargo fetch --locked -q \
	  --target $$(rustc -vV | sed -n 's/^host: //p') && touch $@)
export CARGO_NET_OFFLINE := true

# --- 2. QEMU source: Debian's package, or QEMU_SRC -------------------------
ifeq ($(QEMU_SRC),)
$(STAMPS)/fetched: $(B)/stamps/deps
	$(call stage,fetch qemu $(QEMU_VERSION),\
	  $(CURDIR)/meson-glue/fetch-qemu.sh '$(QEMU_VERSION)' $(SRC) $(B)/downloads && \
	  rm -rf $(STAMPS)/patched $(STAMPS)/applied && mkdir -p $(STAMPS) && \
	  echo '$(QEMU_VERSION)' > $@)
else
$(STAMPS)/fetched: $(B)/stamps/deps
	@test -f $(SRC)/monitor/monitor.c || { echo "QEMU_SRC=$(SRC) is not a QEMU tree"; exit 1; }
	@mkdir -p $(STAMPS) && touch $@
endif

# QEMU's own Rust (QEMU_RUST=1) builds the crates QEMU's
# subprojects/*-rs.wrap name; Debian's source has the wraps but not the
# meson file meson lays over each crate (subprojects/packagefiles/).
# meson-glue/qemu-rust/crates.py fetches the crates with cargo (QEMU's
# rust/Cargo.lock pins the wraps' versions), puts them where meson looks
# for a wrap's download (subprojects/packagecache, hash-checked) and
# writes the meson files from cargo's view of each crate.  configure runs
# with --disable-download: from here on nothing is downloaded.  The lab
# build gets the HPET (meson-glue/qemu-rust/lab-devices.mak), whose Rust
# implementation puts QEMU's Rust into qemu-system-x86_64.
$(STAMPS)/crates: $(STAMPS)/fetched $(CURDIR)/meson-glue/qemu-rust/crates.py | $(B)/stamps/deps
	$(call stage,QEMU's crates,\
	  $(PY) $(CURDIR)/meson-glue/qemu-rust/crates.py $(SRC) && \
	  ln -sfn $(CURDIR)/meson-glue/qemu-rust/lab-devices.mak $(SRC)/configs/devices/x86_64-softmmu/qmh-rust-lab.mak && \
	  touch $@)

# --- 3. patches: a changed series is taken off again and re-applied --------
# A tree made a git tree by patches-import is left alone: its commits are
# the series (they must be what qemu-patches/ holds; patches-export and
# patches-import bring the two together).
SERIES_GIT := $(wildcard $(SRC)/.git/qmh-series)
# The names of the patches to apply, rewritten only when they change, so
# that a patch left out for a version (or removed) applies the series anew
$(STAMPS)/patch-list: FORCE
	@mkdir -p $(@D) && echo '$(notdir $(PATCHES))' | cmp -s - $@ || echo '$(notdir $(PATCHES))' > $@
ifneq ($(SERIES_GIT),)
$(STAMPS)/patched: $(STAMPS)/fetched $(PATCHES) $(STAMPS)/patch-list
	@tmp=$$(mktemp -d) && $(CURDIR)/qemu-patches/series.sh export $(SRC) $$tmp && \
	  same=yes; [ "$$(ls $$tmp)" = "$$(cd qemu-patches && ls 0*.patch)" ] || same=; \
	  for p in $(PATCHES); do cmp -s $$p $$tmp/$$(basename $$p) || same=; done; rm -rf $$tmp; \
	  [ -n "$$same" ] || { echo "$(SRC) is a git tree (make patches-import) whose commits are not"; \
	    echo "qemu-patches/: make patches-export writes the commits to qemu-patches/,"; \
	    echo "make patches-import [FORCE=1] takes qemu-patches/ into the tree"; exit 1; }
	@ln -sfn $(CURDIR)/meson-glue $(SRC)/monitor/hotplug && \
	  ln -sfn $(CURDIR)/tests/qtest/monitor-hotplug-test.c $(SRC)/tests/qtest/ && touch $@
else
$(STAMPS)/patched: $(STAMPS)/fetched $(PATCHES) $(STAMPS)/patch-list
	$(call stage,patch,\
	  if [ -d $(STAMPS)/applied ]; then \
	    for p in $$(ls $(STAMPS)/applied | sort -r); do \
	      patch -d $(SRC) -p1 -R -s --batch --no-backup-if-mismatch $(PATCH_FUZZ) < $(STAMPS)/applied/$$p || \
	        { echo "cannot take $$p off $(SRC)"; exit 1; }; done; fi; \
	  rm -rf $(STAMPS)/applied && mkdir -p $(STAMPS)/applied && \
	  for p in $(PATCHES); do \
	    echo "  applying $$(basename $$p)"; \
	    patch -d $(SRC) -p1 -s --batch --forward --no-backup-if-mismatch $(PATCH_FUZZ) < $$p || \
	      { echo "patch $$(basename $$p) does not apply to $(SRC)"; exit 1; }; \
	    cp $$p $(STAMPS)/applied/; done && \
	  $(if $(BASELINE),true,ln -sfn $(CURDIR)/meson-glue $(SRC)/monitor/hotplug && \
	  ln -sfn $(CURDIR)/tests/qtest/monitor-hotplug-test.c $(SRC)/tests/qtest/) && touch $@)
endif

# The series as git commits in $(SRC): pristine QEMU tagged "base", one
# commit per patch.  Edit with git there, build with make as usual, and
# write the commits back with patches-export (docs/upstreaming.md).
patches-import: $(STAMPS)/fetched
	@$(if $(BASELINE),echo "BASELINE=1 has no series"; exit 1;)
	$(call stage,patches-import,\
	  $(CURDIR)/qemu-patches/series.sh import '$(QEMU_VERSION)' $(SRC) $(STAMPS)/applied && \
	  rm -rf $(STAMPS)/applied && \
	  ln -sfn $(CURDIR)/meson-glue $(SRC)/monitor/hotplug && \
	  ln -sfn $(CURDIR)/tests/qtest/monitor-hotplug-test.c $(SRC)/tests/qtest/ && \
	  touch $(STAMPS)/patched)

patches-export:
	@$(CURDIR)/qemu-patches/series.sh export $(SRC)
	@touch $(STAMPS)/patched

# --- 4. configure and build ------------------------------------------------
# meson reconfigures itself when a patch changes a meson.build file; a
# build directory configured from another source tree, or with other
# flags, is configured anew
QMH_CONFIG := $(SRC) $(strip $(CONFIGURE_FLAGS))
ifneq ($(wildcard $(QBUILD)/build.ninja),)
ifneq ($(shell cat $(QBUILD)/qmh-config 2>/dev/null),$(QMH_CONFIG))
.PHONY: $(QBUILD)/build.ninja
endif
endif
$(QBUILD)/build.ninja: | $(STAMPS)/patched $(if $(QEMU_RUST),$(STAMPS)/crates)
	$(call stage,configure$(if $(SANITIZE), (sanitizers))$(if $(TSAN), (tsan))$(if $(LAB), (lab)),\
	  rm -rf $(QBUILD) && mkdir -p $(QBUILD) && cd $(QBUILD) && \
	  $(SRC)/configure --python=$(PY) $(CONFIGURE_FLAGS) > configure.log 2>&1 && \
	  echo '$(QMH_CONFIG)' > qmh-config || { tail -30 configure.log; exit 1; })

# ninja decides what is stale: C files touched by a patch, or the crate
# (its depfile lists the Rust sources, shim and manifest).
$(BIN)/.built: $(QBUILD)/build.ninja $(STAMPS)/patched $(if $(QEMU_RUST),$(STAMPS)/crates) $(B)/stamps/cargo-fetch FORCE
	@if ninja -C $(QBUILD) -n $(BINARIES) | grep -q '^\['; then \
	  t0=$$(date +%s); echo "==> build $(QBUILD)"; \
	  ninja -C $(QBUILD) $(BINARIES) || exit 1; \
	  echo "==> build: $$(( $$(date +%s) - t0 ))s"; fi
	@# the option ROMs; a binary run from the build tree looks up the
	@# firmware path inside qemu-bundle/, so the firmware goes there too
	@$(if $(LAB),,$(MAKE) --no-print-directory -s -C $(QBUILD)/pc-bios/optionrom all && \
	  for d in $(subst :, ,$(FIRMWARE_PATH)); do mkdir -p $(QBUILD)/qemu-bundle$$(dirname $$d) && \
	    ln -sfn $$d $(QBUILD)/qemu-bundle$$d || exit 1; done)
	@mkdir -p $(BIN)
	@# a new file renamed into place: a running copy keeps its inode
	@for b in $(BINARIES); do n=$$(basename $$b); cmp -s $(QBUILD)/$$b $(BIN)/$$n || \
	  { cp $(QBUILD)/$$b $(BIN)/.$$n.new && mv -f $(BIN)/.$$n.new $(BIN)/$$n; } || exit 1; done
	@test -f $@ || touch $@

FORCE:

# --- install ---------------------------------------------------------------
# The product's binaries go to PREFIX/bin; QEMU's data (keymaps, trace
# events) and the option ROMs built from its source go to
# PREFIX/share/qemu, where a relocatable QEMU looks relative to its own
# binary (bin/../share/qemu), whatever PREFIX it was configured with.
# The BIOS and the NIC ROMs stay Debian's (packages seabios and
# ipxe-qemu), in the directories the build was configured with
# (FIRMWARE_PATH).  A list of what was installed goes with it, for
# uninstall.
PREFIX ?= /usr/local
DESTDIR ?=
IROOT := $(DESTDIR)$(PREFIX)
MANIFEST := share/qemu-monitor-hotplug/installed-files
# $(call install_to,ROOT) and $(call uninstall_from,ROOT)
install_to = data=$(QBUILD)/qemu-bundle$$(sed -n 's/^\#define CONFIG_QEMU_DATADIR "\(.*\)"$$/\1/p' $(QBUILD)/config-host.h) && \
	  test -d $$data/keymaps && \
	  for d in $(filter-out $(QBUILD)/%,$(subst :, ,$(FIRMWARE_PATH))); do \
	    test -d $$d || { echo "install: firmware directory $$d is missing (packages seabios and ipxe-qemu)"; exit 1; }; done && \
	  mkdir -p $(1)/bin $(1)/share/qemu/keymaps $(dir $(1)/$(MANIFEST)) && \
	  list=$$(mktemp) && \
	  for b in $(BINARIES); do n=$$(basename $$b); install -m 755 $(BIN)/$$n $(1)/bin/$$n && \
	    echo bin/$$n >> $$list || exit 1; done && \
	  for f in $$(cd $$data && find -L . -type f | sed 's|^\./||' | sort); do \
	    install -D -m 644 $$data/$$f $(1)/share/qemu/$$f && echo share/qemu/$$f >> $$list || exit 1; done && \
	  for f in $(QBUILD)/pc-bios/optionrom/*.bin; do n=$$(basename $$f); \
	    install -m 644 $$f $(1)/share/qemu/$$n && echo share/qemu/$$n >> $$list || exit 1; done && \
	  echo $(MANIFEST) >> $$list && mv $$list $(1)/$(MANIFEST) && chmod 644 $(1)/$(MANIFEST) && \
	  echo "installed $$(wc -l < $(1)/$(MANIFEST)) files in $(1)"
uninstall_from = test -f $(1)/$(MANIFEST) || { echo "uninstall: nothing of ours in $(1) ($(MANIFEST) missing)"; exit 1; }; \
	  (cd $(1) && xargs rm -f < $(MANIFEST) && \
	  for d in share/qemu/keymaps share/qemu share/qemu-monitor-hotplug bin share; do \
	    rmdir $$d 2>/dev/null || true; done)

install: build
	@$(if $(LAB),echo "install: a lab build (LAB=1 or SANITIZE=1 or another QEMU_VERSION) is for tests only"; exit 1;)
	$(call stage,install into $(IROOT),$(call install_to,$(IROOT)))

uninstall:
	$(call stage,uninstall from $(IROOT),$(call uninstall_from,$(IROOT)))

# make install into a temporary prefix; the installed QEMU, with the
# build tree hidden (a mount namespace), must list its data directory,
# load its firmware from there and from Debian's directories, boot the
# test guest and serve a monitor added at run time; then uninstall
# must leave nothing behind
CHECK_PREFIX := /opt/qemu-monitor-hotplug
check-install: build guest
	$(call stage,check-install,\
	  tmp=$$(mktemp -d) && root=$$tmp$(CHECK_PREFIX) && \
	  { $(call install_to,$$root); } && \
	  cp $(GUEST)/vmlinuz $(GUEST)/initrd.img $$tmp/ && \
	  if unshare --map-root-user --mount true 2>/dev/null; then \
	    unshare --map-root-user --mount sh -c 'mount -t tmpfs none "$$0" && exec python3 "$$@"' \
	      $(B) $(CURDIR)/tests/install/check.py $$root $$tmp $(B); \
	  else echo "check-install: no mount namespace here: the build tree stays visible"; \
	    python3 $(CURDIR)/tests/install/check.py $$root $$tmp $(B); fi && \
	  { $(call uninstall_from,$$root); } && \
	  left=$$(find $$root -mindepth 1) && \
	  { [ -z "$$left" ] || { echo "check-install: uninstall left: $$left"; exit 1; }; } && \
	  rm -rf $$tmp)

# --- the test guest: Debian's kernel and a busybox initramfs ----------------
# the accelerators that boot it here (KVM if it works, TCG always)
ACCELS := $(CURDIR)/tests/guest/accels.sh $(BIN)/qemu-system-x86_64 $(GUEST)
guest: $(GUEST)/initrd.img
$(GUEST)/initrd.img: tests/guest/build.sh tests/guest/init | $(B)/stamps/deps
	$(call stage,guest,$(CURDIR)/tests/guest/build.sh $(GUEST) $(B)/downloads/guest)

# --- 5. demo and tests -----------------------------------------------------
# The product boots the test guest and hands three clients one-shot QMP
# sessions at once (examples/vmspawn_manager); a lab build cannot boot
# it and shows a monitor added and removed instead (examples/demo.py).
DEMO_CLIENTS := 'examples/session-client.sh query-status query-name' \
	'examples/session-client.sh query-monitors' 'examples/session-client.sh query-kvm'
demo: build $(if $(LAB),,guest)
	$(call stage,demo,$(if $(LAB),$(PY) examples/demo.py $(BIN)/qemu-system-x86_64,\
	  $(CARGO_ENV) cargo run --locked --release -q --example vmspawn_manager -- \
	    --accel $$($(ACCELS) | cut -d, -f1) $(BIN)/qemu-system-x86_64 $(GUEST) $(DEMO_CLIENTS)))

# Everything: the suite on the default build, on the ASan/UBSan build,
# on the TSan build and on the second QEMU version, the leak check, QEMU's
# own Rust beside the crate, the series' own checks, and a minute of
# libFuzzer on QEMU's JSON parser.
check: check-lint check-suite check-iotests check-python check-valgrind check-install check-baseline check-qemu-rust \
	check-sanitize check-tsan check-versions check-series check-fuzz-json
	@echo "==> all checks passed"

# The test suite of one variant (version, sanitizers)
check-suite: build check-cargo check-qtest check-unit

# rustfmt with QEMU's settings (.rustfmt.toml), and clippy on the crate,
# the tests, the benchmarks and the example
check-lint: build
	$(call stage,rustfmt,cargo fmt --check)
	$(call stage,clippy,$(CARGO_ENV) cargo clippy --locked --release --all-targets -q -- -D warnings)
	$(call stage,rustdoc,$(CARGO_ENV) RUSTDOCFLAGS='-D warnings' cargo doc --locked --release --no-deps --document-private-items -q)

# the lab builds cannot boot the guest: they skip its tests (guest_*)
check-cargo: build $(if $(LAB),,guest)
	$(call stage,cargo test$(if $(SANITIZE), (sanitizers))$(if $(LAB), (lab)) $(QEMU_VERSION),\
	  $(if $(LAB),,QMH_ACCELS=$$($(ACCELS)) )$(CARGO_ENV) cargo test --locked --release -q $(if $(LAB),-- --skip guest_ --skip a_running_command))

check-qtest: build
	$(call stage,qtest$(if $(SANITIZE), (sanitizers)) $(QEMU_VERSION),\
	  $(VENV)/bin/meson test -C $(QBUILD) --print-errorlogs \
	    $(addprefix qtest-x86_64/,$(QTESTS)))

# QEMU's unit tests of what the series changes: the JSON parser and
# QObjects, chardevs, socket and TLS channels, QMP commands and events,
# QOM properties, yank (meson builds the ones not built yet)
UNIT_TESTS := check-qjson check-qobject check-qdict check-qlist check-qnum check-qstring \
	test-char test-io-channel-socket test-io-channel-tls test-util-sockets \
	test-qmp-cmds test-qmp-event check-qom-proplist check-qom-interface test-yank
check-unit: build
	$(call stage,unit tests$(if $(SANITIZE), (sanitizers)) $(QEMU_VERSION),\
	  $(VENV)/bin/meson test -C $(QBUILD) --print-errorlogs $(UNIT_TESTS))

# QEMU's iotests through its own check script, on the product build:
# the series' test of dynamic monitors and block jobs, and QMP-heavy
# tests of QEMU's own (block jobs, snapshots, media change, job events)
# ./check counts "not run" as a pass: the series' own test must run.
IOTESTS := monitor-hotplug-block-job 030 040 041 055 085 118 141 156 185
IOTESTS_LOG := $(OUT)/iotests.log
check-iotests: build
	$(call stage,iotests,cd $(QBUILD)/tests/qemu-iotests && \
	  { $(QBUILD)/pyvenv/bin/python3 ./check -qcow2 $(IOTESTS) 2>&1; echo "check: exit $$?"; } | tee $(IOTESTS_LOG) && \
	  grep -qx 'check: exit 0' $(IOTESTS_LOG) && \
	  if grep -E '^(Not run|Some cases not run in):.*monitor-hotplug-block-job' $(IOTESTS_LOG); then \
	    echo "monitor-hotplug-block-job was not run: it must run"; false; fi)

# Regression tests of bugs released QEMU has too: each must see its bug
# on the unpatched baseline build (QMH_BASELINE=1, common::expect_bug),
# so that "this test can fail" is shown, not claimed.  Test binaries come
# from the product tree; only the QEMU under test differs.
BASELINE_TESTS := stress:greeting_comes_first_during_broadcasts \
	sessions:a_new_client_gets_nothing_meant_for_the_previous_one \
	input_queue:one_byte_completing_two_requests_does_not_overflow_the_queue
check-baseline: build
	@$(MAKE) --no-print-directory BASELINE=1 LAB=1 build
	$(call stage,regression tests on unpatched QEMU,\
	  for t in $(BASELINE_TESTS); do \
	    $(CARGO_ENV) QEMU_BIN_DIR=$(B)/baseline/bin QMH_BASELINE=1 \
	      cargo test --locked --release -q --test $${t%%:*} -- --exact $${t#*:} || exit 1; done)

check-python: build
	$(call stage,python clients,QEMU_BIN_DIR=$(BIN) $(PY) -m unittest discover -s tests/python)

# The churn scenario, and QEMU's JSON parser test (duplicate keys leaked)
check-valgrind: build
	$(call stage,valgrind churn,$(CARGO_ENV) cargo test --locked --release -q --test valgrind -- --ignored)
	$(call stage,valgrind check-qjson,ninja -C $(QBUILD) tests/unit/check-qjson >/dev/null && \
	  valgrind -q --leak-check=full --show-leak-kinds=definite$(comma)indirect --errors-for-leak-kinds=definite$(comma)indirect --error-exitcode=1 \
	    $(QBUILD)/tests/unit/check-qjson >/dev/null)

# QEMU's own Rust from Debian's source: the lab build configured with
# --enable-rust (QEMU_RUST=1 LAB=1, build/qemu-rust/), then
# tests/qemu-rust/check.py on its qemu-system-x86_64: QEMU's Rust HPET
# linked in beside the crate, each with its own std, and the crate's
# commands working: about 3 minutes on 2 cores, nearly all of it the
# build.  make QEMU_RUST=1 LAB=1 check-suite runs the whole suite there.
ifeq ($(QEMU_RUST),)
check-qemu-rust:
	@$(MAKE) --no-print-directory QEMU_RUST=1 LAB=1 check-qemu-rust
else
check-qemu-rust: build
	$(call stage,QEMU's Rust beside the crate,$(PY) $(CURDIR)/tests/qemu-rust/check.py $(BIN))
endif

# The sanitizer and second-version legs run the heavy tests at a quarter
# of their size (tests/common/scale.rs): every path, fewer times.
check-sanitize: build
	@QMH_SCALE=25 $(MAKE) --no-print-directory SANITIZE=1 $(TESTS_OF_PRODUCT) check-suite

# ThreadSanitizer on the lab build (build/tsan/): the integration tests
# that drive threads against each other, sized for TSan's slowdown (5 to
# 15 times) with the variables the tests read: a quarter, as on the ASan
# leg, also of the chardev churn, which the ASan leg runs whole; the
# model's seeds 1 and 2 (the other legs and make fuzz run it long); 20
# flood-and-remove rounds (1.5 s each here) and 1,000 greeting
# connections.  TSan needs no lucky interleaving: two accesses
# without a happens-before edge within its history are a report.  A
# report ends that QEMU (exit code 66: its test fails), and any report
# file left in TSAN_LOGS fails the run and is printed.  (QMH_SCALE
# below 11 is too small for stress.rs: its rounds must pass WARMUP.)
TSAN_TESTS := sessions removal chardev_races stress model
TSAN_SIZES := QMH_SCALE=25 QMH_SEEDS=2 QMH_FLOOD_ROUNDS=20 QMH_GREETING_CONNECTS=1000 QMH_CHARDEV_ROUNDS=250
ifeq ($(TSAN),)
check-tsan: build
	@$(MAKE) --no-print-directory TSAN=1 $(TESTS_OF_PRODUCT) check-tsan
else
check-tsan: build
	$(call stage,cargo test (tsan) $(TSAN_TESTS),rm -rf $(TSAN_LOGS) && mkdir -p $(TSAN_LOGS) && \
	  { $(TSAN_SIZES) $(CARGO_ENV) cargo test --locked --release -q --no-fail-fast $(addprefix --test ,$(TSAN_TESTS)) \
	      -- --skip guest_; rc=$$?; } && \
	  if ls $(TSAN_LOGS)/report.* >/dev/null 2>&1; then cat $(TSAN_LOGS)/report.*; \
	    echo "==> ThreadSanitizer: $$(cat $(TSAN_LOGS)/report.* | grep -c '^WARNING: ThreadSanitizer') reports ($(TSAN_LOGS))"; \
	    rc=1; fi; [ $$rc = 0 ])
endif

check-matrix:
	@for v in $(MATRIX_VERSIONS); do \
	  $(MAKE) --no-print-directory QEMU_VERSION=$$v check-suite || exit 1; done

# the matrix minus the default version, which check-suite covers, at the
# sanitizer legs' size (the chardev churn too: its races are 10.2's code)
check-versions: build
	@for v in $(filter-out $(DEFAULT_VERSION),$(MATRIX_VERSIONS)); do \
	  QMH_SCALE=25 QMH_CHARDEV_ROUNDS=250 $(MAKE) --no-print-directory QEMU_VERSION=$$v $(TESTS_OF_PRODUCT) check-suite || exit 1; done

# checkpatch.pl on every patch, and every prefix of the series builds
check-series: $(B)/stamps/deps $(B)/stamps/docs-venv
	$(call stage,series,$(CURDIR)/qemu-patches/series.sh check '$(QEMU_VERSION)' $(B)/series)

series: $(B)/stamps/deps
	@$(CURDIR)/qemu-patches/series.sh print '$(QEMU_VERSION)' $(B)/series

# The release the schema's "Since:" lines name, kept in qemu-patches/SINCE
since:
	@test -n "$(SINCE)" || { echo "usage: make since SINCE=X.Y"; exit 1; }
	sed -i 's/^+# Since: $(shell cat qemu-patches/SINCE)$$/+# Since: $(SINCE)/' qemu-patches/0*.patch
	echo '$(SINCE)' > qemu-patches/SINCE

bench: build
	@$(MAKE) --no-print-directory BASELINE=1 build
	$(call stage,bench,$(CARGO_ENV) QEMU_BASELINE_BIN=$(B)/baseline/bin/qemu-system-x86_64 \
	  cargo bench --locked --bench monitors)

# The model-based random tester (tests/model.rs) on SEEDS new seeds of
# 1,000 steps, or on as many as FUZZ_SECONDS allow; SANITIZE=1 runs it on the
# ASan/UBSan build.  fuzz-input: the byte-level input fuzzer's long run
# (tests/input_fuzz.rs) for FUZZ_SECONDS (300).
fuzz: build
	$(call stage,fuzz$(if $(SANITIZE), (sanitizers)),$(CARGO_ENV) \
	  $(if $(FUZZ_SECONDS),QMH_FUZZ_SECONDS=$(FUZZ_SECONDS),QMH_FUZZ_SEEDS=$(or $(SEEDS),10)) \
	  cargo test --locked --release --test model -- --ignored --nocapture model_fuzz)

fuzz-input: build
	$(call stage,fuzz-input$(if $(SANITIZE), (sanitizers)),$(CARGO_ENV) QMH_FUZZ_SECONDS=$(or $(FUZZ_SECONDS),300) \
	  cargo test --locked --release --test input_fuzz -- --ignored --nocapture input_fuzz_long)

# --- coverage-guided fuzzing of QEMU's JSON parser (libFuzzer) -------------
# tests/fuzz/qmp-json-fuzz.c feeds its input to a JSONMessageParser as a
# QMP monitor does, whole, byte by byte and in chunks the input chooses,
# and takes each result the monitor's way (qmp_dispatch(), the reply
# written and read back); its comment lists the invariants.  QEMU's JSON
# path is compiled here with clang, libFuzzer's coverage, ASan and UBSan
# (every UBSan report fatal); the QObject containers with the sanitizers
# but no coverage (their loops over 512 hash buckets cost a quarter of
# the time and guide nothing); what else it calls (util/error.c,
# cutils.c, qapi-util.c) comes uninstrumented from the build's
# libqemuutil.a, and tests/fuzz/stubs.c cuts off what only running a
# command needs.
#   JSON_FUZZ_SECONDS  how long check-fuzz-json fuzzes (30)
#   FUZZ_MAX_LEN  the longest input (4096: room for the nesting limit,
#                 1,024 brackets, and many requests)
#   FUZZ_ARGS     more libFuzzer options, e.g. -seed=N (a log's "INFO: Seed:")
#                 to make the same inputs again
# Each run starts from a fresh copy of tests/fuzz/corpus (what it adds
# stays in $(FUZZ_DIR)/corpus until the next run); any crash, sanitizer
# report, leak, broken invariant, input slower than 30 s or RSS beyond
# 2 GB fails it, and libFuzzer saves the input as $(FUZZ_DIR)/crash-*
# (leak-*, timeout-*, oom-*): docs/testing.md says how to replay it.
FUZZ_DIR     := $(OUT)/fuzz
FUZZ_BIN     := $(FUZZ_DIR)/qmp-json-fuzz
JSON_FUZZ_SECONDS ?= 30
FUZZ_MAX_LEN ?= 4096
FUZZ_ARGS    ?=
FUZZ_CC      ?= clang
FUZZ_COVERED := qobject/json-lexer.c qobject/json-streamer.c qobject/json-parser.c \
	qobject/json-writer.c qobject/qjson.c util/unicode.c qapi/qmp-dispatch.c qapi/qmp-registry.c
FUZZ_PLAIN   := qobject/qobject.c qobject/qnum.c qobject/qstring.c qobject/qdict.c \
	qobject/qlist.c qobject/qbool.c qobject/qnull.c
# QEMU's own flags for its C (meson), less gcc's warnings; clang's
# -Winitializer-overrides is QEMU's idiom in json-lexer.c's table
FUZZ_CFLAGS   = -std=gnu11 -g -O1 -fno-omit-frame-pointer \
	-fsanitize=address,undefined -fno-sanitize-recover=all \
	-D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -D_LARGEFILE_SOURCE \
	-fno-strict-aliasing -fno-common -fwrapv -Wall -Wno-initializer-overrides \
	-I$(QBUILD) -I$(QBUILD)/qapi -I$(QBUILD)/trace -iquote $(SRC)/include \
	-iquote $(SRC)/host/include/$(shell uname -m) -iquote $(SRC)/host/include/generic \
	-iquote $(SRC) -isystem $(SRC)/linux-headers $(shell pkg-config --cflags glib-2.0)
# leaks are what this target looks for (the Makefile's default is off);
# GLib's slices straight from malloc, for LeakSanitizer to see them (the
# target sets it too, for runs by hand, but GLib may have started first)
FUZZ_ENV := ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 G_SLICE=always-malloc
# $(call fuzz_cc,SOURCES,FLAGS): compile each into obj/, named by its path
fuzz_cc = for f in $(1); do n=$${f\#$(SRC)/}; n=$${n\#$(CURDIR)/}; \
	    $(FUZZ_CC) $(FUZZ_CFLAGS) $(2) -c $$f -o $(FUZZ_DIR)/obj/$$(echo $$n | tr / _ | sed 's/\.c$$/.o/') || exit 1; done

# libqemuutil.a is new whenever the QEMU objects or headers it holds are
$(FUZZ_BIN): tests/fuzz/qmp-json-fuzz.c tests/fuzz/stubs.c $(addprefix $(SRC)/,$(FUZZ_COVERED) $(FUZZ_PLAIN)) \
		$(QBUILD)/libqemuutil.a $(QBUILD)/config-host.h
	$(call stage,build $@,\
	  rm -rf $(FUZZ_DIR)/obj && mkdir -p $(FUZZ_DIR)/obj && \
	  $(call fuzz_cc,$(addprefix $(SRC)/,$(FUZZ_COVERED)) $(CURDIR)/tests/fuzz/qmp-json-fuzz.c,-fsanitize=fuzzer-no-link) && \
	  $(call fuzz_cc,$(addprefix $(SRC)/,$(FUZZ_PLAIN)) $(CURDIR)/tests/fuzz/stubs.c,) && \
	  $(FUZZ_CC) -fsanitize=fuzzer$(comma)address$(comma)undefined $(FUZZ_DIR)/obj/*.o $(QBUILD)/libqemuutil.a \
	    $$(pkg-config --libs glib-2.0) -lm -pthread -o $@.new && mv -f $@.new $@)

# The binary is made by a second make: its prerequisites are the build's
check-fuzz-json: build
	@$(MAKE) --no-print-directory -s $(FUZZ_BIN)
	$(call stage,fuzz qmp-json $(JSON_FUZZ_SECONDS)s,\
	  rm -rf $(FUZZ_DIR)/corpus && cp -r tests/fuzz/corpus $(FUZZ_DIR)/corpus && \
	  { $(FUZZ_ENV) $(FUZZ_BIN) -max_total_time=$(JSON_FUZZ_SECONDS) -max_len=$(FUZZ_MAX_LEN) \
	      -timeout=30 -rss_limit_mb=2048 -dict=$(CURDIR)/tests/fuzz/qmp-json.dict \
	      -artifact_prefix=$(FUZZ_DIR)/ -print_final_stats=1 $(FUZZ_ARGS) \
	      $(FUZZ_DIR)/corpus > $(FUZZ_DIR)/qmp-json-fuzz.log 2>&1; rc=$$?; } && \
	  if [ $$rc = 0 ]; then grep -E '^INFO: Seed:|DONE|^stat::(number_of_executed_units|peak_rss_mb)' $(FUZZ_DIR)/qmp-json-fuzz.log; \
	  else tail -60 $(FUZZ_DIR)/qmp-json-fuzz.log; grep 'Test unit written to' $(FUZZ_DIR)/qmp-json-fuzz.log; \
	    echo "qmp-json-fuzz: exit $$rc (log: $(FUZZ_DIR)/qmp-json-fuzz.log)"; fi; [ $$rc = 0 ])

clean:
	rm -rf $(QBUILD) $(BIN) $(OUT)/cargo $(FUZZ_DIR) $(STAMPS)/patched

distclean:
	rm -rf $(B)
