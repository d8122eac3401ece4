"""The README's screenshots are made by the real app: the script must keep working."""

from __future__ import annotations

from pathlib import Path

from comm_tui.app.screenshots import main


def test_the_screenshot_script_draws_every_view(tmp_path: Path) -> None:
    assert main([str(tmp_path)]) == 0
    made = sorted(p.name for p in tmp_path.glob("*.svg"))
    readme = Path(__file__).resolve().parent.parent / "README.md"
    shown = {name for name in made if f"screenshots/{name}" in readme.read_text()}
    assert shown == set(made) and len(made) >= 5
    for name in made:
        svg = (tmp_path / name).read_text()
        assert svg.startswith("<svg") and "comm-tui" in svg
