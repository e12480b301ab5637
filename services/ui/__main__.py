"""``python -m ui``: the control room on UI_PORT (default 8501), like ``streamlit run``."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from streamlit.web import cli


def upload_mb() -> int:
    """UPLOAD_MAX_MB (the gateway's, 20 unless set), in whole MB as Streamlit takes it."""
    try:
        return max(1, math.ceil(float(os.environ.get("UPLOAD_MAX_MB") or 20)))
    except ValueError:
        return 20  # the gateway refuses the setting itself, saying why


def main() -> None:
    app = Path(__file__).with_name("app.py")
    sys.argv = ["streamlit", "run", str(app), "--server.port", os.environ.get("UI_PORT", "8501"),
                "--server.address", os.environ.get("UI_HOST", "127.0.0.1"),
                "--server.headless", "true", "--browser.gatherUsageStats", "false",
                # a listener's menu: no Deploy button, no developer options
                "--client.toolbarMode", "viewer",
                # the upload box says the gateway's limit, not Streamlit's 200 MB
                "--server.maxUploadSize", str(upload_mb()), *sys.argv[1:]]
    sys.exit(cli.main())


if __name__ == "__main__":
    main()
