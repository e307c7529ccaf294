"""The main job of `./dev run` (replaced as shoal grows)."""

from __future__ import annotations


def main() -> None:
    print("shoal is set up; the main job arrives with `shoal pack`.")


if __name__ == "__main__":
    main()
