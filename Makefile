# Thin aliases. `make run` and `make test` bootstrap everything they need on a fresh machine:
# when `deno` is not on PATH, the pinned version is installed from npm into .tools/.

DENO_VERSION := 2.9.6
LOCAL_DENO := .tools/node_modules/.bin/deno
DENO ?= $(shell command -v deno 2>/dev/null || echo $(LOCAL_DENO))
CONFIG ?= config.yaml
TEST_FLAGS ?=

.PHONY: run test check fmt lint typecheck bench bundle compile clean deno

# Lets Prox hint V8 (src/adapters/gc_hint.ts): one minor GC per 16 MiB of streamed body data,
# so dead chunks do not pile up (1 GiB through Prox peaks at ~115 MiB RSS, ~170 without), and
# one memory-reducing GC once traffic stops after a burst that left RSS above memory.reduce_above.
# Without the flag the hints are no-ops. V8's own memory reducer is off (Prox's decides), and a
# scavenge does not lower the old-generation limit after an idle spell (which started two full
# GCs within the first half second of every burst).
# No allocation-site pretenuring: under HTTP/2 load V8 would start allocating per-request objects
# straight into the old generation, where, dead but uncollected, they keep young objects alive
# through scavenges (~1.8 MB promoted per scavenge instead of ~0, scavenge time 2-3x).
# A regex from the config (`path_matches`, `value_matches`) that backtracks too much on a hostile
# request (`(a+)+$` against 40 a's: minutes, with every connection of the process waiting) is
# finished by V8's linear-time engine instead (src/domain/regex_fold.ts; see the README).
V8_FLAGS := --v8-flags=--expose-gc,--no-allocation-site-pretenuring,--no-maglev,--no-memory-reducer,--no-scavenger-updates-allocation-limit,--enable-experimental-regexp-engine-on-excessive-backtracks,--enable-experimental-regexp-engine

run: deno
	$(DENO) run -A $(V8_FLAGS) mod.ts serve --config $(CONFIG)

test: deno
	$(DENO) test -A --trace-leaks $(TEST_FLAGS)

check: deno
	$(DENO) fmt --check
	$(DENO) lint
	$(DENO) check mod.ts src/ tests/ bench/
	$(MAKE) test

fmt: deno
	$(DENO) fmt

bench: deno
	bash bench/tools.sh
	$(DENO) run -A bench/run.ts

# One JavaScript file that runs with plain `deno run -A dist/prox.js` from any directory.
bundle: deno
	mkdir -p dist
	$(DENO) bundle --platform=deno -o dist/prox.js mod.ts

# Per-platform executables. `deno compile` downloads a `denort` runtime per target unless
# DENORT_BIN points at one (only valid for the host target). prom-client's dependency bintrees
# ships a 2 MB test file that overflows the compiler: it is excluded (the path exists only with a
# local node_modules/, hence --node-modules-dir=auto). A reload parses a large config in a Web
# Worker, whose module compile finds only when named (--include).
TARGETS := x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu x86_64-apple-darwin aarch64-apple-darwin x86_64-pc-windows-msvc
COMPILE_FLAGS := -A $(V8_FLAGS) --unstable-net --unstable-no-legacy-abort --include static --include src/adapters/config_worker.ts --node-modules-dir=auto --exclude node_modules/.deno/bintrees@1.0.2/node_modules/bintrees/test
compile: deno
	mkdir -p dist
	@if [ -n "$$DENORT_BIN" ]; then \
	  echo "DENORT_BIN set: building for the host only"; \
	  $(DENO) compile $(COMPILE_FLAGS) -o dist/prox mod.ts; \
	else \
	  for t in $(TARGETS); do \
	    $(DENO) compile $(COMPILE_FLAGS) --target $$t -o dist/prox-$$t mod.ts || exit 1; \
	  done; \
	fi

deno:
	@if [ "$(DENO)" = "$(LOCAL_DENO)" ] && [ ! -x $(LOCAL_DENO) ]; then \
	  echo "deno not on PATH: installing deno@$(DENO_VERSION) from npm into .tools/"; \
	  npm install --prefix .tools --no-save --no-audit --no-fund deno@$(DENO_VERSION) >/dev/null; \
	fi

clean:
	rm -rf dist
