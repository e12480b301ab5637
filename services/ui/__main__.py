"""``python -m ui``: the control room on UI_PORT (default 8501), like ``streamlit run``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from streamlit.web import cli


def main() -> None:
    app = Path(__file__).with_name("app.py")
    sys.argv = ["streamlit", "run", str(app), "--server.port", os.environ.get("UI_PORT", "8501"),
                "--server.address", os.environ.get("UI_HOST", "127.0.0.1"),
                "--server.headless", "true", "--browser.gatherUsageStats", "false",
                # a listener's menu: no Deploy button, no developer options
                "--client.toolbarMode", "viewer", *sys.argv[1:]]
    sys.exit(cli.main())


if __name__ == "__main__":
    main()
