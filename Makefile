# Top-level driver. `make` builds build/msrnn (Release); `make test` runs the whole suite twice:
# a Release build and an ASan+UBSan build (which reuses the reference data the first run generated).
JOBS ?= 2
BUILD ?= build

.PHONY: all test test-release test-asan clean format demo install uninstall

all:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

test: test-release test-asan

test-release: all
	cd $(BUILD) && ctest --output-on-failure -j 1

test-asan:
	CC=clang cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMSRNN_SANITIZE=ON -DMSRNN_FUZZ=ON \
		-DMSRNN_GEN_REF=OFF -DMSRNN_REF_DIR=$(CURDIR)/build/ref >/dev/null
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j 1

# The newcomer's first run: build, then run msrnn's own default model (models/default.gguf, trained by
# msrnn with models/train-default.sh): generate from a prompt, and the perplexity of the first two
# 4096-token chunks of a validation book with the full cache and with TOVA at 512 entries per layer.
SHARED ?= ../shared
demo: all
	build/msrnn generate -m models/default.gguf -p "It was a dark and stormy night" -n 64 --seed 1
	build/msrnn perplexity -m models/default.gguf -f $(SHARED)/data/gutenberg/pg55.txt --max-chunks 2
	build/msrnn perplexity -m models/default.gguf -f $(SHARED)/data/gutenberg/pg55.txt --max-chunks 2 \
		--kv tova --kv-size 512

# Install into PREFIX (DESTDIR=... stages it, as packagers do): bin/msrnn, lib/libmsrnn.so.MAJOR
# (+ the .so links and libmsrnn.a), include/msrnn.h, lib/pkgconfig/msrnn.pc, the man pages and
# the bash completion. No root needed for a prefix one can write. `make uninstall` removes exactly
# the files the last install recorded ($(BUILD)/install_manifest.txt), then the directories that
# leaves empty below PREFIX. (BUILD: the build folder, build unless told.)
PREFIX ?= /usr/local
install: all
	cmake --install $(BUILD) --prefix $(PREFIX)

uninstall:
	bash tools/uninstall.sh $(BUILD)/install_manifest.txt $(PREFIX)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan
