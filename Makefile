# Two commands on a fresh machine: `make demo` and `make test`.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed

.PHONY: install demo test clean

install: $(STAMP)

# CPU torch first (the pinned wheel lies on disk): a bare `torch` requirement would pull CUDA builds.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

demo: install
	$(PY) -m tasksup.demo

test: install
	$(PY) -m pytest -q

clean:
	rm -rf .venv results/demo
