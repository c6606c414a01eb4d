# swift-multiprocessing: `make bench` (the main job) and `make test`. Each installs what it needs.
SWIFT ?= swift
SWIFT_TEST_FLAGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo)
FORMAT_PATHS := Package.swift Sources Tests Examples Benchmarks/Package.swift Benchmarks/Sources Scripts \
	Integrations/Distributed/Package.swift Integrations/Distributed/Sources Integrations/Distributed/Tests \
	Integrations/Services/Package.swift Integrations/Services/Sources Integrations/Services/Tests \
	Integrations/PrimeServer/Package.swift Integrations/PrimeServer/Sources

.PHONY: all deps deps-distributed deps-server test-distributed test-services bench-distributed bench-server \
	prime-server load-test load-test-quick build test test-sanitize test-tsan test-asan fuzz examples bench readme-results lint format docs \
	snippets clean

all: build

# liburing-dev (headers + library for the C engine) from apt when missing; python3 for the peer benchmarks.
deps:
	@if ! pkg-config --exists liburing 2>/dev/null; then \
		echo "make deps: installing liburing-dev and pkg-config"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq liburing-dev pkg-config >/dev/null; \
	fi
	@pkg-config --exists liburing || { echo "make deps: liburing is still missing"; exit 1; }
	@command -v strace >/dev/null || { echo "make deps: installing strace (the benchmark counts syscalls with it)"; \
		$(SUDO) apt-get install -y -qq strace >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq strace >/dev/null; } || true; }
	@command -v valgrind >/dev/null || { echo "make deps: installing valgrind (the benchmark counts instructions with callgrind)"; \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq valgrind >/dev/null; } || true; }
	@[ -f /usr/include/boost/interprocess/ipc/message_queue.hpp ] || { \
		echo "make deps: installing libboost-dev (Boost.Interprocess message_queue, a cross-process queue peer)"; \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq libboost-dev >/dev/null; } || true; }
	@command -v python3 >/dev/null || { echo "make deps: python3 is required for the Python peer benchmarks"; exit 1; }
	@python3 -c 'import matplotlib' 2>/dev/null || { echo "make deps: installing matplotlib (the benchmark's charts)"; \
		python3 -m pip install --quiet matplotlib >/dev/null 2>&1 || echo "make deps: no matplotlib: charts will be skipped"; }

build: deps
	$(SWIFT) build

# The suite runs its tests in parallel: pools fork from a zygote or the forkserver, never from a
# thread of this busy process (see Sources/Multiprocessing/Processes/Fork.swift). The tests that
# rewind the system's next pid to force a pid's reuse run after it, alone: every process started
# beside them would get a recycled pid (see pidRewindAllowed in Tests/MultiprocessingTests/TestSupport.swift).
PID_REWIND_TESTS := inheritedChoiceAndTidReuse|noSignalToRecycledPid
test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build $(SWIFT_TEST_FLAGS)
	MP_TEST_PID_REWIND=1 $(SWIFT) test --skip-build --no-parallel --filter '$(PID_REWIND_TESTS)'
	$(MAKE) test-services
	$(MAKE) test-distributed

# The library in a server (Integrations/Services, a package of its own: swift-service-lifecycle,
# swift-log and swift-metrics stay off the library's graph): its services, logger and metrics adapter.
test-services: deps
	$(SWIFT) build --package-path Integrations/Services --build-tests
	$(SWIFT) test --package-path Integrations/Services --skip-build

# The distributed pool (Integrations/Distributed, a package of its own: postgres-nio stays off the
# library's graph) needs a PostgreSQL server and iproute2 (the multi-host test's namespaces); the
# benchmark's Python peer is procrastinate.
deps-distributed:
	@[ -n "$$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" ] && command -v psql >/dev/null || { \
		echo "make deps-distributed: installing postgresql"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq postgresql >/dev/null; }
	@command -v ip >/dev/null || { echo "make deps-distributed: installing iproute2"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq iproute2 >/dev/null; }

# The package's tests against a private PostgreSQL (temporary folder, unix socket, private port),
# then the multi-host test in network namespaces (as root); the server is stopped on any exit.
test-distributed: deps deps-distributed
	Integrations/Distributed/Scripts/test-distributed $(SWIFT)

# The whole suite under ThreadSanitizer and AddressSanitizer; --sanitize instruments the C target too.
test-sanitize: test-tsan test-asan

# The Swift runtime's crash handler is off under the sanitizers (their own handlers and its
# memory server trip over each other when a test crashes a child on purpose), and so is LeakSanitizer:
# a forked child that calls exit() holds the parent's whole heap, which it reports as leaked.
# Their runs go one test at a time, so the tests that rewind the next pid run in them too.
SANITIZER_ENV := SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0 MP_TEST_PID_REWIND=1
# One test at a time: many tests fork closure children (Process { ... }) on the runner's thread, the
# documented hazard of the fork start method; under TSan's slowed runtime a child forked while another
# test's thread holds a Swift runtime lock (a swift_once, a metadata cache) hangs on it. Pools and
# registered targets do not have it (zygote, forkserver); the plain `make test` runs in parallel.
SANITIZER_TEST_FLAGS ?= --no-parallel

test-tsan: deps
	$(SANITIZER_ENV) $(SWIFT) test --sanitize=thread --scratch-path .build-tsan $(SANITIZER_TEST_FLAGS) $(SWIFT_TEST_FLAGS)

test-asan: deps
	$(SANITIZER_ENV) $(SWIFT) test --sanitize=address --scratch-path .build-asan $(SANITIZER_TEST_FLAGS) $(SWIFT_TEST_FLAGS)

# libFuzzer over the bytes other processes write (the decoder, a queue's ring) for FUZZ_TIME
# seconds, under AddressSanitizer; what it finds lands in .build-fuzz/crashes/. The corpus it grows
# stays in .build-fuzz/corpus for the next run. Linked with lld: gold fails on libFuzzer's archive.
FUZZ_TIME ?= 60
fuzz: deps
	$(SWIFT) build --scratch-path .build-fuzz --product MultiprocessingFuzz --sanitize=address \
		-Xswiftc -DFUZZING -Xswiftc -sanitize=fuzzer -Xcc -fsanitize=fuzzer-no-link -Xswiftc -use-ld=lld
	mkdir -p .build-fuzz/corpus .build-fuzz/crashes
	$(SANITIZER_ENV) .build-fuzz/debug/MultiprocessingFuzz -max_total_time=$(FUZZ_TIME) -max_len=4200 \
		-artifact_prefix=.build-fuzz/crashes/ .build-fuzz/corpus

# The seed's programs, each run once.
examples: deps
	$(SWIFT) build --product multiprocessing-examples
	$(SWIFT) run --skip-build multiprocessing-examples all

# The main job: every suite side by side with its peers (ARGS="--suite lock --quick --json out.json").
# The benchmark is a package of its own (Benchmarks/Package.swift, its own .build): its dependencies stay
# off the library's graph. It runs from here, so its paths (bench-results/) are the repository's.
BENCH_BUILD := Benchmarks/.build
# The Boost peer is compiled only where Boost's headers are (`__has_include`), and a build does not
# notice headers that appear later: a bench built before `make deps` installed them would report
# "no Boost" for good. The first build that sees them rebuilds the peer's target.
BOOST_SEEN := $(BENCH_BUILD)/boost-headers-seen

bench: deps
	@if [ -f /usr/include/boost/interprocess/ipc/message_queue.hpp ] && [ ! -f $(BOOST_SEEN) ]; then \
		rm -rf $(BENCH_BUILD)/*/release/CxxBenchPeers.build && mkdir -p $(BENCH_BUILD) && touch $(BOOST_SEEN); fi
	$(SWIFT) build -c release --package-path Benchmarks --product multiprocessing-bench
	$(BENCH_BUILD)/release/multiprocessing-bench $(ARGS)
	@# One suite (ARGS="--suite queue") is that suite alone: the distributed and server suites (PostgreSQL,
	@# wrk, a server build) come with a run of all of them.
	$(if $(findstring --suite,$(ARGS)),,$(MAKE) bench-distributed QUICK=$(if $(findstring --quick,$(ARGS)),1,))
	$(if $(findstring --suite,$(ARGS)),,$(MAKE) bench-server QUICK=$(if $(findstring --quick,$(ARGS)),1,))

# The distributed suite: tasks/s and enqueue-to-result latency with 1, 2 and 4 local worker
# processes, beside procrastinate on the same server, in the same run; rows in
# bench-results/distributed.{md,json}. Skipped, with a note, when PostgreSQL cannot start. QUICK=1
# (CI's smoke run) measures the debug build that test-distributed made, with fewer tasks.
bench-distributed: deps deps-distributed
	@python3 -c 'import procrastinate' 2>/dev/null || { echo "make bench-distributed: installing procrastinate"; \
		python3 -m pip install --quiet procrastinate >/dev/null 2>&1 || echo "make bench-distributed: no procrastinate"; }
	Integrations/Distributed/Scripts/bench-distributed $(SWIFT) $(if $(QUICK),quick,full)

# A real service (Integrations/PrimeServer, a package of its own: Hummingbird and swift-prometheus
# stay off the library's graph): an HTTP server whose CPU-heavy endpoint runs in a forkserver
# ProcessPool, driven from outside by wrk (Debian's package).
deps-server:
	@command -v wrk >/dev/null || { echo "make deps-server: installing wrk"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk >/dev/null; }

prime-server: deps deps-server
	$(SWIFT) build -c release --package-path Integrations/PrimeServer --product prime-server

# 30 s of wrk (64 connections) while a worker is SIGKILLed every second, then SIGTERM during load:
# every promise is checked (see the script); figures in bench-results/load-test.md. The quick form
# (8 s) runs in CI.
load-test: prime-server
	Integrations/PrimeServer/Scripts/prime-server-harness load-test

load-test-quick: prime-server
	Integrations/PrimeServer/Scripts/prime-server-harness load-test --quick

# The CPU-heavy endpoint's requests/s with the work in a ProcessPool, a ThreadPool, inline and in
# Task.detached, and a trivial endpoint's p99 beside it; bench-results/server.{md,json}.
bench-server: prime-server
	Integrations/PrimeServer/Scripts/prime-server-harness bench $(if $(QUICK),--quick,)

# Copies bench-results/latest.md (the last full `make bench`) into the README's results section.
readme-results:
	python3 Benchmarks/readme_results.py

# The DocC catalog (swift-docc-plugin), every warning an error; the archive lands in .build/plugins/.
docs: deps
	$(SWIFT) package generate-documentation --target Multiprocessing --warnings-as-errors

# Every Swift block of README.md, the DocC catalog and the sources' `///` comments compiles (in .build-snippets/).
snippets: deps
	python3 Scripts/check-snippets $(SWIFT)

lint:
	$(SWIFT) format lint --strict --recursive $(FORMAT_PATHS)

format:
	$(SWIFT) format format --in-place --recursive $(FORMAT_PATHS)

clean:
	rm -rf .build .build-tsan .build-asan .build-fuzz .build-snippets $(BENCH_BUILD) Integrations/Distributed/.build Integrations/Services/.build \
		Integrations/PrimeServer/.build
