"""`python -m defectopt ...` (also what `torchrun -m defectopt` runs)."""

from defectopt.cli import main

if __name__ == "__main__":
    main()
