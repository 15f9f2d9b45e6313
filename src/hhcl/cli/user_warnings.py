"""Warnings as a user of ``hhcl`` sees them: one line each, ``hhcl: warning: MESSAGE (Category)``.

Known harmless third-party warnings are not shown at all; a few torch warnings the user can act on
are said in hhcl's words; every other warning (hhcl's own included) is its message on one line,
without the file, line number and source echo that Python prints, and each text is shown once.
:func:`hhcl.cli.main` installs this for the length of a command; the library leaves Python's
warnings alone, so a program that imports hhcl keeps its own filters.
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from collections.abc import Iterator

# (category, message regex, module regex): ignored. Nothing in them is for the user to change.
HARMLESS: tuple[tuple[type[Warning], str, str], ...] = (
    # torch internals and third-party code that still call tensor.storage()
    (UserWarning, r"TypedStorage is deprecated", ""),
    # Python >= 3.12, when DataLoader workers fork from a process that runs torch's compute threads:
    # the workers use none of those threads
    (DeprecationWarning, r"This process \(pid=\d+\) is multi-threaded, use of fork\(\) may lead to deadlocks",
     r"multiprocessing\."),
    # faiss's SWIG bindings on Python >= 3.12
    (DeprecationWarning, r"builtin type Swig\w+ has no __module__ attribute", ""),
)

# (message regex, hhcl's words, formatted with the regex's named groups): torch warnings worth a line
REWORDED: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"This DataLoader will create (?P<asked>\d+) worker processes in total\. "
                r"Our suggested max number of worker in current system is (?P<cores>\d+)"),
     "--num-workers {asked} starts more loader processes than the {cores} CPU cores this process may use; "
     "fewer may be faster"),
    # CUDA training with train.deterministic (torch.use_deterministic_algorithms(True, warn_only=True))
    (re.compile(r"(?P<op>\S+) does not have a deterministic implementation, but you set "
                r"'torch\.use_deterministic_algorithms\(True, warn_only=True\)'"),
     "{op} has no deterministic implementation on this device: train.deterministic cannot make this "
     "run repeat bit-identically"),
)


def one_line(message: Warning | str, category: type[Warning]) -> str:
    """``hhcl: warning: MESSAGE (Category)``, in hhcl's words where :data:`REWORDED` has them."""
    text = " ".join(str(message).split())
    for pattern, words in REWORDED:
        match = pattern.search(text)
        if match:
            text = words.format(**match.groupdict())
            break
    return f"hhcl: warning: {text} ({category.__name__})"


@contextlib.contextmanager
def user_facing_warnings() -> Iterator[None]:
    """Within it: :data:`HARMLESS` warnings are ignored, every other one is :func:`one_line` on stderr."""
    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = one_line(message, category)
        if text not in shown:  # the same warning from several places or several loaders: once
            shown.add(text)
            print(text, file=sys.stderr if file is None else file)

    with warnings.catch_warnings():
        for category, message, module in HARMLESS:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        warnings.showwarning = show
        yield
