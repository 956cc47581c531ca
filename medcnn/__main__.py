"""``python -m medcnn`` (also what ``torchrun -m medcnn`` runs)."""

import sys

from medcnn.cli import main

if __name__ == "__main__":
    sys.exit(main())
