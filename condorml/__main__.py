"""``python -m condorml`` runs the command-line interface."""

from condorml.cli import main

if __name__ == "__main__":
    main()
