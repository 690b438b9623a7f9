# qemu-monitor-hotplug: `make` builds the patched QEMU and runs the demo,
# `make check` runs every test.  Everything built lands under build/.

QEMU_VERSION ?= 1:10.2.2+ds-1
# An existing QEMU tree to patch and build instead of fetching one.
QEMU_SRC ?=

B        := $(CURDIR)/build
SRC      := $(if $(QEMU_SRC),$(abspath $(QEMU_SRC)),$(B)/src)
QBUILD   := $(B)/qemu
VENV     := $(B)/venv
PY       := $(VENV)/bin/python3
STAMPS   := $(B)/stamps
PATCHES  := $(sort $(wildcard $(CURDIR)/qemu-patches/*.patch))
BINARIES := qemu-system-x86_64 storage-daemon/qemu-storage-daemon
QTESTS   := qmp-test qmp-cmd-test monitor-hotplug-test
SUDO     := $(if $(filter 0,$(shell id -u)),,sudo)

DEB_PACKAGES := ninja-build libglib2.0-dev libpixman-1-dev flex bison \
	pkg-config libfdt-dev zlib1g-dev dpkg-dev libclang-dev clang \
	python3-venv socat
PY_PACKAGES  := 'meson>=1.5,<2' 'qemu.qmp==0.0.6'

CONFIGURE_FLAGS := --target-list=x86_64-softmmu --without-default-features \
	--without-default-devices --disable-docs --disable-tcg --enable-kvm \
	--disable-install-blobs --disable-rust --enable-tools

# cargo and build.rs outside of meson (unit and integration tests)
CARGO_ENV := QEMU_SRC_DIR=$(SRC) QEMU_BUILD_DIR=$(QBUILD) \
	QEMU_BIN_DIR=$(B)/bin CARGO_TARGET_DIR=$(B)/cargo

# $(call stage,NAME,COMMANDS): run COMMANDS, then print how long they took.
stage = @t0=$$(date +%s); echo "==> $(1)"; $(2); rc=$$?; \
	echo "==> $(1): $$(( $$(date +%s) - t0 ))s"; exit $$rc

.PHONY: all build demo check check-cargo check-qtest clean distclean

all: build demo

build: $(B)/bin/.built

# --- 1. build dependencies ------------------------------------------------
$(STAMPS)/deps:
	$(call stage,deps,\
	  missing=$$(for p in $(DEB_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	  if [ -n "$$missing" ]; then $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; fi && \
	  command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup)"; exit 1; } && \
	  { [ -x $(PY) ] || python3 -m venv $(VENV); } && \
	  $(PY) -m pip install -q --disable-pip-version-check $(PY_PACKAGES) && \
	  mkdir -p $(STAMPS) && touch $@)

# --- 2. QEMU source: Debian's package, or QEMU_SRC -------------------------
ifeq ($(QEMU_SRC),)
$(STAMPS)/fetched: $(STAMPS)/deps
	$(call stage,fetch qemu $(QEMU_VERSION),\
	  $(CURDIR)/meson-glue/fetch-qemu.sh '$(QEMU_VERSION)' $(SRC) $(B)/downloads && \
	  rm -f $(STAMPS)/patched && echo '$(QEMU_VERSION)' > $@)
ifneq ($(shell cat $(STAMPS)/fetched 2>/dev/null),$(QEMU_VERSION))
.PHONY: $(STAMPS)/fetched
endif
else
$(STAMPS)/fetched: $(STAMPS)/deps
	@test -f $(SRC)/monitor/monitor.c || { echo "QEMU_SRC=$(SRC) is not a QEMU tree"; exit 1; }
	@touch $@
endif

# --- 3. patches: a changed series is taken off again and re-applied --------
$(STAMPS)/patched: $(STAMPS)/fetched $(PATCHES)
	$(call stage,patch,\
	  if [ -d $(STAMPS)/applied ]; then \
	    for p in $$(ls $(STAMPS)/applied | sort -r); do \
	      patch -d $(SRC) -p1 -R -s --batch < $(STAMPS)/applied/$$p || \
	        { echo "cannot take $$p off $(SRC)"; exit 1; }; done; fi; \
	  rm -rf $(STAMPS)/applied && mkdir -p $(STAMPS)/applied && \
	  for p in $(PATCHES); do \
	    echo "  applying $$(basename $$p)"; \
	    patch -d $(SRC) -p1 -s --batch --forward < $$p || \
	      { echo "patch $$(basename $$p) does not apply to $(SRC)"; exit 1; }; \
	    cp $$p $(STAMPS)/applied/; done && \
	  ln -sfn $(CURDIR)/meson-glue $(SRC)/monitor/hotplug && \
	  ln -sfn $(CURDIR)/tests/qtest/monitor-hotplug-test.c $(SRC)/tests/qtest/ && touch $@)

# --- 4. configure and build ------------------------------------------------
# meson reconfigures itself when a patch changes a meson.build file
$(QBUILD)/build.ninja: | $(STAMPS)/patched
	$(call stage,configure,\
	  rm -rf $(QBUILD) && mkdir -p $(QBUILD) && cd $(QBUILD) && \
	  $(SRC)/configure --python=$(PY) $(CONFIGURE_FLAGS) > configure.log 2>&1 || \
	    { tail -30 configure.log; exit 1; })

# ninja decides what is stale: C files touched by a patch, or the crate
# (its depfile lists the Rust sources, shim and manifest).
$(B)/bin/.built: $(QBUILD)/build.ninja $(STAMPS)/patched FORCE
	@if ninja -C $(QBUILD) -n $(BINARIES) | grep -q '^\['; then \
	  t0=$$(date +%s); echo "==> build"; \
	  ninja -C $(QBUILD) $(BINARIES) || exit 1; \
	  echo "==> build: $$(( $$(date +%s) - t0 ))s"; fi
	@mkdir -p $(B)/bin
	@for b in $(BINARIES); do cmp -s $(QBUILD)/$$b $(B)/bin/$$(basename $$b) || \
	  cp $(QBUILD)/$$b $(B)/bin/; done
	@test -f $@ || touch $@

FORCE:

# --- 5. demo and tests -----------------------------------------------------
demo: build
	$(call stage,demo,$(PY) examples/demo.py $(B)/bin/qemu-system-x86_64)

check: build check-cargo check-qtest
	@echo "==> all checks passed"

check-cargo: build
	$(call stage,cargo test,$(CARGO_ENV) cargo test --locked --release -q)

check-qtest: build
	$(call stage,qtest,\
	  $(VENV)/bin/meson test -C $(QBUILD) --print-errorlogs \
	    $(addprefix qtest-x86_64/,$(QTESTS)))

clean:
	rm -rf $(QBUILD) $(B)/bin $(B)/cargo $(STAMPS)/patched

distclean:
	rm -rf $(B)
