"""Running ``hhcl`` in the test process, and the shape of its answer to a user mistake."""

from hhcl.cli import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``hhcl *argv`` (each argument through ``str``): the exit status, stdout and stderr."""
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_line_error(status: int, err: str, *names) -> None:
    """A user mistake: exit status 2 and one line on stderr that names each of ``names``."""
    assert status == 2
    assert len(err.strip().splitlines()) == 1, err
    for name in names:
        assert str(name) in err
