# imapgate — GNU make. `make` builds the daemon; `make test` installs what is
# missing, builds and runs every test; `make demo` shows it working.

CC      ?= cc
PYTHON  ?= /usr/bin/python3
PREFIX  ?= /usr/local
STATEDIR ?= /var/lib/imapgate
CONFFILE ?= /etc/imapgate.conf
DESTDIR ?=
FUZZ_SECONDS ?= 20

WARN    = -Wall -Wextra -Wformat=2 -Wshadow -Wstrict-prototypes -Werror
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE $(WARN) -Isrc -DCONFIG_STATE_DIR='"$(STATEDIR)"' \
           -DCONFIG_DEFAULT_PATH='"$(CONFFILE)"'
LIBS     = -lssl -lcrypto -lsqlite3 -lhiredis -lpthread

ifeq ($(SANITIZE),1)
BUILD   ?= build-san
CFLAGS  += -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
else
BUILD   ?= build
endif

SRCS       = $(wildcard src/*.c)
LIB_SRCS   = $(filter-out src/main.c,$(SRCS))
LIB_OBJS   = $(LIB_SRCS:src/%.c=$(BUILD)/obj/%.o)
UNIT_SRCS  = $(wildcard tests/unit/test_*.c)
UNIT_BINS  = $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
TOOL_SRCS  = $(wildcard tools/*.c)
TOOL_BINS  = $(TOOL_SRCS:tools/%.c=$(BUILD)/%)
FUZZ_SRCS  = $(wildcard fuzz/fuzz_*.c)

.PHONY: all deps test unit e2e check demo fuzz bench install deb clean

all: $(BUILD)/imapgate $(TOOL_BINS)

deps:
	@sh scripts/deps.sh

$(BUILD)/obj/%.o: src/%.c $(wildcard src/*.h) | $(BUILD)/obj
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj $(BUILD)/tests:
	mkdir -p $@

$(BUILD)/libimapgate.a: $(LIB_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/imapgate: $(BUILD)/obj/main.o $(BUILD)/libimapgate.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/%: tools/%.c $(BUILD)/libimapgate.a
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libimapgate.a $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libimapgate.a | $(BUILD)/tests
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libimapgate.a -lcmocka $(LIBS)

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

e2e: all
	IMAPGATE_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e

# The README's test command: everything, from a fresh machine.
test: deps
	$(MAKE) all
	$(MAKE) unit
	$(MAKE) e2e

demo: deps
	$(MAKE) all
	$(PYTHON) tools/demo.py --build $(abspath $(BUILD))

# libFuzzer targets, each run for FUZZ_SECONDS.
fuzz: deps | build/fuzz
	@set -e; for f in $(FUZZ_SRCS); do \
	  n=$$(basename $$f .c); \
	  clang -std=c11 -D_GNU_SOURCE -g -O1 -Isrc -fsanitize=fuzzer,address,undefined \
	    -o build/fuzz/$$n $$f $(LIB_SRCS) $(LIBS); \
	  mkdir -p build/fuzz/$$n.corpus; \
	  echo "== $$n ($(FUZZ_SECONDS)s)"; \
	  if build/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=build/fuzz/$$n- \
	      build/fuzz/$$n.corpus fuzz/corpus/$$n > build/fuzz/$$n.log 2>&1; then rc=0; else rc=$$?; fi; \
	  tail -n 12 build/fuzz/$$n.log; \
	  if [ $$rc -ne 0 ]; then echo "== $$n FAILED (exit $$rc); see build/fuzz/$$n.log"; exit 1; fi; \
	done

build/fuzz:
	mkdir -p $@

# The benchmark (bench/README.md): imapgate vs direct Dovecot vs imapproxy.
# Its load generator has its own flags, never the sanitizers: it must not be
# the bottleneck, even in a SANITIZE=1 build.
LOADGEN_CFLAGS = -std=c11 -D_GNU_SOURCE -O2 -g $(WARN)

$(BUILD)/loadgen: bench/loadgen.c
	@mkdir -p $(BUILD)
	$(CC) $(LOADGEN_CFLAGS) -o $@ $< -lssl -lcrypto

bench: deps
	$(MAKE) all $(BUILD)/loadgen
	$(PYTHON) bench/run.py --build $(abspath $(BUILD)) $(BENCH_ARGS)

# The one version: src/version.h (also the Debian package's).
VERSION := $(shell sed -n 's/^\#define IMAPGATE_VERSION "\(.*\)"$$/\1/p' src/version.h)

install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin \
	  $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man8 \
	  $(DESTDIR)$(PREFIX)/share/doc/imapgate
	install -m 755 $(BUILD)/imapgate $(DESTDIR)$(PREFIX)/sbin/imapgate
	for t in $(TOOL_BINS); do install -m 755 $$t $(DESTDIR)$(PREFIX)/bin/; done
	install -m 644 doc/imapgate.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/
	install -m 644 doc/imapgate.8 doc/imapgate-ctl.8 doc/imapgate-stat.8 $(DESTDIR)$(PREFIX)/share/man/man8/
	install -m 644 imapgate.conf.example $(DESTDIR)$(PREFIX)/share/doc/imapgate/
	install -m 644 contrib/fail2ban/filter.d/imapgate.conf $(DESTDIR)$(PREFIX)/share/doc/imapgate/fail2ban-filter.conf
	install -m 644 contrib/fail2ban/jail.d/imapgate.conf $(DESTDIR)$(PREFIX)/share/doc/imapgate/fail2ban-jail.conf
	# Not the guard's state directory (STATEDIR, the default guard_db's):
	# imapgate creates it at start for proc_username; made here it would
	# be root's.

# The Debian package, built offline from a copy of the tree (dpkg-buildpackage
# writes into the source's parent): $(DEB_DIR)/imapgate_$(VERSION)_<arch>.deb.
# The copy's debian/changelog gets the version of src/version.h. Never a
# sanitized package: the outer make's variables (SANITIZE=1) stay out.
DEB_DIR ?= build/deb
deb:
	@sh scripts/deps.sh deb
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/src
	tar -cf - --exclude=./build --exclude=./build-san --exclude=./.git --exclude='./build-*' \
	  --exclude=__pycache__ . | tar -xf - -C $(DEB_DIR)/src
	sed -i '1s/^imapgate ([^)]*)/imapgate ($(VERSION))/' $(DEB_DIR)/src/debian/changelog
	cd $(DEB_DIR)/src && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u SANITIZE -u BUILD \
	  dpkg-buildpackage -us -uc -b
	@ls $(DEB_DIR)/imapgate_$(VERSION)_*.deb

clean:
	rm -rf build build-san
