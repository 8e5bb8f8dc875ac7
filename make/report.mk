# Report targets, included by the main Makefile (`-include make/*.mk`). docs/report.md explains them.
#
#   make readme-tables        rewrite README.md's reference tables (between the rd3kit:tables markers) from reference/
#   make readme-tables-check  exit 1 if those tables are missing or stale (tests/test_readme_tables.py does the same)
#   make report               build $(REPORT_DIR)/index.html, report.md and plots/ from reference/ and $(RESULTS)
#   make report-screenshot    render $(REPORT_DIR)/index.html in headless Chromium into docs/report-screenshot.png

# PY and RD3KIT come from the main Makefile.
RESULTS ?= $(wildcard results/*.json)
REPORT_DIR ?= build/report
CHROMIUM ?= chromium
CHROMIUM_FLAGS ?= --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync

.PHONY: readme-tables readme-tables-check report report-screenshot

readme-tables:
	$(PY) tools/readme_tables.py

readme-tables-check:
	$(PY) tools/readme_tables.py --check

report:
	$(RD3KIT) report $(RESULTS) --out $(REPORT_DIR)

report-screenshot: report
	profile=$$(mktemp -d) && $(CHROMIUM) $(CHROMIUM_FLAGS) --user-data-dir=$$profile \
	  --screenshot=$(CURDIR)/docs/report-screenshot.png --window-size=1280,2000 \
	  file://$(abspath $(REPORT_DIR))/index.html; status=$$?; rm -rf $$profile; exit $$status
