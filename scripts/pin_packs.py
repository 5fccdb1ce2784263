"""Write (or --check) the sha256 pins of the first-party packs in catalog.toml's [plugins] index: each `pack`
entry's wheel is rebuilt by swiftlike's reproducible builder and its sha256 put in the entry.

    python scripts/pin_packs.py          # rewrite stale pins
    python scripts/pin_packs.py --check  # exit 1 when a pin is stale (CI)
"""
import re
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swiftlike.checksums import sha256_file  # noqa: E402
from swiftlike.plugins.wheels import build_pack  # noqa: E402


def pins(catalog: Path) -> dict:
    """{entry name: (pinned sha256, the rebuilt wheel's sha256)} of the catalog's `pack` entries."""
    index = tomllib.loads(catalog.read_text()).get("plugins", {})
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, entry in index.items():
            if entry.get("pack"):
                wheel = build_pack(catalog.parent / entry["pack"], Path(tmp) / name)
                out[name] = (entry.get("sha256"), sha256_file(wheel))
    return out


def main(argv) -> int:
    catalog = ROOT / "catalog.toml"
    stale = {name: new for name, (old, new) in pins(catalog).items() if old != new}
    if "--check" in argv:
        for name in stale:
            print(f"catalog.toml [plugins.{name}]: sha256 is stale; run python scripts/pin_packs.py")
        return 1 if stale else 0
    text = catalog.read_text()
    for name, new in stale.items():
        table = re.search(rf"^\[plugins\.{re.escape(name)}\]\n(?:(?!\[).*\n)*", text, re.M)
        body = re.sub(r'^sha256 = ".*"$', f'sha256 = "{new}"', table[0], count=1, flags=re.M)
        text = text[:table.start()] + body + text[table.end():]
        print(f"[plugins.{name}] sha256 = {new}")
    catalog.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
