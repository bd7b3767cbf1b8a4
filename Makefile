# The two commands of the README. Each does all of its own set-up on a machine that has only python3:
# a virtual environment in .venv, uv bootstrapped from pip, the locked stack installed, then the job.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml Makefile | cksum | cut -d' ' -f1)
WORKDIR ?= workdirs/demo
PYTEST_ARGS ?=
APT_INSTALL = DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends >/dev/null 2>&1

.PHONY: setup browser demo test clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.8
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(BIN)/python -m leukojax.main --config configs/hybrid.py:sample --workdir $(WORKDIR)
	$(BIN)/python -m leukojax.explain --workdir $(WORKDIR) --method both --lime_samples 300 \
	  --layer vgg16=block4_conv3 --layer inception_v3=mixed2 --layer xception=entry_stride8 \
	  tfds_builders/cnmc2019/sample/C-NMC_Leukemia/training_data/fold_1/hem/UID_H10_105_1_hem.bmp \
	  tfds_builders/cnmc2019/sample/C-NMC_Leukemia/training_data/fold_1/all/UID_51_5_1_all.bmp

# Headless Chromium for the browser check of report.html (tests/test_html_report.py): Debian's package,
# installed where this user can (root, apt-get); elsewhere that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { $(APT_INSTALL) chromium || { apt-get update -qq >/dev/null 2>&1 && $(APT_INSTALL) chromium; }; }; } || \
	  echo "Chromium could not be installed: the browser check of report.html will be skipped."

test: $(STAMP) browser
	$(BIN)/python -m pytest -n 2 --dist loadgroup --timeout 900 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) workdirs .cache
