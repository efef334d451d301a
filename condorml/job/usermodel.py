"""A user's own model: an ``nn.Module`` subclass in a Python file (``--model FILE.py:CLASS``).

The contract (README, "Your own model"): the file is one self-contained module (it may import
installed packages, not files beside it); ``CLASS`` subclasses ``torch.nn.Module`` and is
constructed as ``CLASS(num_classes=N)``; its ``forward`` takes a float tensor (batch, 3, S, S) of
RGB images normalised with the class attributes ``input_mean`` / ``input_std`` if it defines
them (three numbers each), else ImageNet's, and returns (batch, N) logits. The file's content
(its SHA-256) is part of a checkpoint's identity: a checkpoint resumes, and predicts, only with
the same code.

Loading a file runs its code: that is the point of the user's own model, and it runs only from
a file the user names (never from anything stored in a checkpoint).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from condorml.architectures import file_sha256
from condorml.errors import CondormlError, TransientError, is_transient_os_error, os_error
from condorml.job.checkpoint import out_of_memory, summary


@dataclass(frozen=True)
class ModelClass:
    """A model class loaded from a file, and the file's identity."""

    cls: type[nn.Module]
    path: Path
    sha256: str

    def build(self, num_classes: int, option: str = "--model") -> nn.Module:
        """``cls(num_classes=num_classes)``; a one-line error if the class cannot take it."""
        where = f"{option} {self.path}:{self.cls.__name__}"
        try:
            inspect.signature(self.cls).bind(num_classes=num_classes)
        except TypeError:
            raise CondormlError(
                f"{where}: the class does not accept num_classes; give its __init__ a num_classes parameter (README: Your own model)"
            ) from None
        except ValueError:  # no signature to inspect (a C extension): try it
            pass
        try:
            model = self.cls(num_classes=num_classes)
        except CondormlError:
            raise
        except Exception as err:
            _raise_if_machine_failure(where, "construct the model", err)
            raise CondormlError(
                f"{where}: constructing it with num_classes={num_classes} failed ({type(err).__name__}: {err})"
            ) from None
        if not isinstance(model, nn.Module):
            raise CondormlError(
                f"{where}: constructing it gave a {type(model).__name__}, not an nn.Module"
            )
        return model


_loaded: dict[str, object] = {}  # sha256 -> module: a file is executed once per process


def load_model_class(path: Path, class_name: str, option: str = "--model") -> ModelClass:
    """Import ``path`` and return its class ``class_name``.

    Raises
    ------
    CondormlError
        For a missing or unreadable file, a file that fails to import (its error in one line), no
        such class, or a class that is no ``nn.Module`` subclass; transient for an I/O error.
    """
    path = Path(path)
    where = f"{option} {path}:{class_name}"
    try:
        sha256 = file_sha256(path)
    except FileNotFoundError:
        raise CondormlError(f"{where}: no such model file") from None
    except IsADirectoryError:
        raise CondormlError(f"{where}: a folder, not a Python file") from None
    except OSError as err:
        raise os_error(f"{where}: cannot read it ({err.strerror or err})", err, path) from None
    module = _loaded.get(sha256)
    if module is None:
        module = _import(path, sha256, where)
        _loaded[sha256] = module
    cls = getattr(module, class_name, None)
    if cls is None:
        classes = sorted(
            name for name, value in vars(module).items()
            if inspect.isclass(value) and issubclass(value, nn.Module) and value.__module__ == module.__name__  # type: ignore[attr-defined]
        )  # fmt: skip
        found = f"; it defines {', '.join(classes)}" if classes else "; it defines no nn.Module"
        raise CondormlError(f"{where}: no class {class_name} in {path.name}{found}")
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise CondormlError(f"{where}: {class_name} is not a subclass of torch.nn.Module")
    return ModelClass(cls, path, sha256)


def _import(path: Path, sha256: str, where: str) -> object:
    name = f"condorml_user_model_{sha256[:16]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CondormlError(f"{where}: not a Python file that can be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up by module name
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        del sys.modules[name]
        raise CondormlError(f"{where}: line {err.lineno}: {err.msg}") from None
    except Exception as err:
        del sys.modules[name]
        _raise_if_machine_failure(where, "import it", err)
        raise CondormlError(
            f"{where}: importing it failed ({type(err).__name__}: {err}); a model file must be self-contained"
        ) from None
    return module


def _raise_if_machine_failure(where: str, action: str, err: Exception) -> None:
    """Raise a transient error when the machine, not the user's code, failed: no memory (a large
    model on a small slot) or a disk error, which another attempt may not meet; else return."""
    if out_of_memory(err):
        raise TransientError(
            f"{where}: not enough memory to {action} ({summary(err)}); run again, with more memory "
            "(request_memory, or a larger GPU) if it recurs"
        ) from None
    if isinstance(err, OSError) and is_transient_os_error(err):
        raise TransientError(f"{where}: cannot {action} ({err.strerror or err})") from None
