"""The ``softseg`` command (placeholder until the command-line issue lands)."""


def main(argv=None) -> int:
    raise SystemExit("softseg: the command-line interface is not built yet")
