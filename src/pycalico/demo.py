"""`make demo`: a tour of pycalico (grows as the parts land)."""

from __future__ import annotations


def main() -> None:
    print("pycalico demo: not yet implemented")


if __name__ == "__main__":
    main()
