"""``python -m gitm play|eval|learn [hydra overrides]``: the console scripts without installing them."""

import sys


def main() -> None:
    from . import cli

    commands = {"play": cli.play, "eval": cli.evaluate, "learn": cli.learn}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(f"usage: python -m gitm {{{'|'.join(commands)}}} [hydra overrides]", file=sys.stderr)
        raise SystemExit(2)
    cmd = sys.argv.pop(1)
    sys.argv[0] = f"gitm-{cmd}"
    commands[cmd]()


if __name__ == "__main__":
    main()
