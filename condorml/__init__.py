"""condorml: PyTorch image classifiers on HTCondor pools, from one laptop run to ensembles.

Importing the package is cheap: torch, pandas and htcondor2 are imported by the modules that
need them, so ``condorml --help`` answers at once.
"""

from condorml.errors import CondormlError

__version__ = "0.1.0"

__all__ = ["CondormlError", "__version__"]
