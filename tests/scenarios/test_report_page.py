"""A person's view of the study report: ``report.html`` written by ``lgeom report`` for a known study, opened
in headless Chromium; its screenshot is kept in the test artifacts folder (see :mod:`tests.scenarios.chromium`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lgeom import names
from pipelines.report import write_report
from tests.scenarios.chromium import assert_rendered, needs_chromium, render
from tests.tracking.known_study import study  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.integration, needs_chromium]


def test_report_page_renders_with_its_tables_and_figures(study: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "report"
    write_report(study["name"], out, store=study["store"])
    url = (out / names.REPORT_HTML).as_uri()
    dom, shot = render(url, "report-page.png", window="1400,2400")
    assert f"{study['name']}: results" in dom, "the page's heading names the study"
    assert dom.count("<table") >= 1 and dom.count("<img") >= 1, "the rendered page has tables and figures"
    assert_rendered(shot, width=1300, height=2300)
