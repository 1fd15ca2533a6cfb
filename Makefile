# Two commands on a fresh machine: `make demo` and `make test`.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
LOCK    := requirements.txt
LATEST  := .venv-latest
# -qq: pip errors only (this machine's pip config names mirror folders that do not exist: a warning per package).
# The CPU build lies on this machine's disk (/opt/wheels); torch from PyPI is a multi-GB CUDA build.
TORCH   := torch==2.13.0+cpu

.PHONY: install demo test test-latest lock clean

install: $(STAMP)

# Exact versions with hashes from the lock (every dependency but torch), then torch and the
# package without resolving anything.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -qq --require-hashes --no-deps -r $(LOCK)
	$(PIP) install -qq --no-deps $(TORCH)
	$(PIP) install -qq --no-deps --no-build-isolation -e .
	$(PIP) check
	touch $(STAMP)

demo: install
	$(PY) -m tasksup.demo

test: install
	$(PY) -m pytest -q

# Upstream canary: the newest releases pyproject.toml allows (torch stays pinned), in $(LATEST).
test-latest:
	test -x $(LATEST)/bin/python || python3 -m venv $(LATEST)
	$(LATEST)/bin/pip install -qq --upgrade --upgrade-strategy eager $(TORCH) -e '.[test]'
	$(LATEST)/bin/python -c "from importlib.metadata import version as v; \
	  print(*(p + ' ' + v(p) for p in 'transformers torch numpy accelerate tokenizers'.split()), sep=', ')"
	$(LATEST)/bin/python -m pytest -q

# Pin what `make test-latest` installed (run it first, then `make test`). LOCK_FROM=.venv re-locks
# what .venv has (e.g. after adding a dependency). uv resolves; torch's deps come from its CPU wheel.
LOCK_FROM ?= $(LATEST)
UV_COMPILE = $(LATEST)/bin/uv pip compile -q --generate-hashes --custom-compile-command 'make lock' \
	--python-version 3.11 --python-platform x86_64-unknown-linux-gnu
lock:
	$(LATEST)/bin/pip install -qq uv==0.13.9
	$(LOCK_FROM)/bin/pip freeze --all --exclude-editable | grep -Ev '^(pip|uv)==' > $(LOCK_FROM)/tested.txt
	$(UV_COMPILE) pyproject.toml --extra test -c $(LOCK_FROM)/tested.txt \
	  --find-links /opt/wheels --no-emit-package torch -o $(LOCK)
	$(UV_COMPILE) requirements/llamacpp.in -c $(LOCK) -o requirements/llamacpp.lock.txt
	! grep -iE '^(torch|nvidia|triton|cuda)' $(LOCK) requirements/llamacpp.lock.txt

clean:
	rm -rf .venv $(LATEST) results/demo
