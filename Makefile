# mamba-dna: one binary (mamba-dna) on top of one static library (libmambadna.a).
#
#   make                 build build/mamba-dna (and a link ./mamba-dna)
#   make test            CPU unit tests (cmocka) + command-line tests
#   make test SANITIZE=1 the same under ASan+UBSan (objects in build-san/)
#   make test-gpu        GPU parity tests (needs a CUDA device)
#   make bench / bench-gpu / data / fuzz / demo
#
# Knobs: CUDA=0|1 (default: 1 when nvcc is found), CUDA_ARCH=90, SANITIZE=1, OPENMP=0|1.
# Debian packages: libhts-dev zlib1g-dev libopenblas-dev libjansson-dev libcmocka-dev
# (+ nvidia-cuda-toolkit or the CUDA Toolkit for the GPU backend).

CC       ?= gcc
NVCC     ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA_ARCH ?= 90
OPENMP   ?= 1
SANITIZE ?= 0

ifeq ($(NVCC),)
CUDA ?= 0
else
CUDA ?= 1
endif

ifeq ($(SANITIZE),1)
BUILD    ?= build-san
SANFLAGS  = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT       = -O2 -g -march=x86-64-v3
else
BUILD    ?= build
SANFLAGS  =
OPT       = -O3 -g -march=x86-64-v3
endif

CFLAGS   += -std=gnu11 -Wall -Wextra $(OPT) $(SANFLAGS) -MMD -MP -Ilib -Iformats -Ikernels
LDFLAGS  += $(SANFLAGS)
LIBS      = -lhts -ljansson -lopenblas -lcrypto -lz -lm -lpthread
ifeq ($(OPENMP),1)
CFLAGS   += -fopenmp
LDFLAGS  += -fopenmp
endif

LIB_SRC  = $(wildcard lib/*.c) $(wildcard formats/*.c)
LIB_OBJ  = $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRC))
TOOL_SRC = $(wildcard tools/*.c)
TOOL_OBJ = $(patsubst %.c,$(BUILD)/%.o,$(TOOL_SRC))
TEST_SRC = $(wildcard tests/test_*.c)
TEST_BIN = $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TEST_GPU_SRC = $(wildcard tests/gpu_*.c)
TEST_GPU_BIN = $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_GPU_SRC))
CU_SRC   = $(wildcard kernels/*.cu)

ifeq ($(CUDA),1)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CU_OBJ    = $(patsubst %.cu,$(BUILD)/%.o,$(CU_SRC))
CFLAGS   += -DMD_WITH_CUDA -I$(CUDA_HOME)/include
NVFLAGS   = -O3 -std=c++17 -gencode=arch=compute_$(CUDA_ARCH),code=sm_$(CUDA_ARCH) \
            -Xcompiler -Wall,-Wextra,-fPIC -Ilib -Iformats -Ikernels -MMD -MP -lineinfo
LIBS     += -L$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart_static -ldl -lrt -lstdc++
FEATURES  = CUDA=on (sm_$(CUDA_ARCH))
else
CU_OBJ    =
FEATURES  = CUDA=off
endif
ifeq ($(OPENMP),1)
FEATURES += OpenMP=on
else
FEATURES += OpenMP=off
endif
ifeq ($(SANITIZE),1)
FEATURES += ASan+UBSan=on
endif

LIBA = $(BUILD)/libmambadna.a
BIN  = $(BUILD)/mamba-dna

.PHONY: all features test test-unit test-cli test-gpu bench bench-train bench-gpu data fuzz demo clean deps

all: features $(BIN)
	@if [ "$(BUILD)" = build ]; then ln -sf $(BIN) mamba-dna; fi

features:
	@echo "mamba-dna build: $(FEATURES)"

$(LIBA): $(LIB_OBJ) $(CU_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(TOOL_OBJ) $(LIBA)
	$(CC) $(LDFLAGS) -o $@ $(TOOL_OBJ) $(LIBA) $(LIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/kernels/%.o: kernels/%.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/%.c $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIBA) -lcmocka $(LDFLAGS) $(LIBS)

# --- tests -----------------------------------------------------------------------------------
# tests/test_*.c are cmocka suites (run from the repository root);
# tests/cli/*.sh are command-line tests that take the binary as $1.
test: deps all $(TEST_BIN) $(BUILD)/bench/heldout_eval
	@set -e; fail=0; pass=0; \
	for t in $(TEST_BIN); do \
	  echo "== $$t"; \
	  if $$t; then pass=$$((pass+1)); else fail=$$((fail+1)); echo "FAILED: $$t"; fi; \
	done; \
	for t in tests/cli/*.sh; do \
	  [ -e "$$t" ] || continue; echo "== $$t"; \
	  if bash $$t $(CURDIR)/$(BIN); then pass=$$((pass+1)); else fail=$$((fail+1)); echo "FAILED: $$t"; fi; \
	done; \
	echo "test suites: $$pass passed, $$fail failed"; \
	[ $$fail -eq 0 ]

test-gpu: all $(TEST_GPU_BIN)
	@set -e; for t in $(TEST_GPU_BIN); do echo "== $$t"; $$t; done

# Install the Debian packages the build and tests need when they are missing (root only).
deps:
	@sh tests/install-deps.sh

data:
	@sh tests/fetch-data.sh

# Benchmark programs link the library like the tests do.
$(BUILD)/bench/%: bench/%.c $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIBA) $(LDFLAGS) $(LIBS)

bench: all $(BUILD)/bench/bench_forward
	@sh bench/run.sh $(BIN)

bench-train: all
	@sh bench/train.sh $(BIN) $(or $(THREADS),2)

bench-gpu: all $(BUILD)/bench/bench_forward
	@sh bench/run-gpu.sh $(BIN)

fuzz:
	@$(MAKE) -f tests/fuzz/Makefile FUZZ_SECONDS=$(or $(FUZZ_SECONDS),10)

demo: deps all
	@sh tests/fetch-data.sh || echo "demo: make data failed; using the committed chr20 slice" >&2
	@sh tests/demo.sh $(BIN)

clean:
	rm -rf build build-san mamba-dna

-include $(LIB_OBJ:.o=.d) $(TOOL_OBJ:.o=.d) $(CU_OBJ:.o=.d) $(TEST_BIN:=.d)
