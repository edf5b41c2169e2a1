"""How every command runs: one-line errors, exit statuses, warnings and interruptions.

The rules, for every command (the top-level group, :class:`GuardedGroup`, applies them):

* An error is exactly **one line** on stderr, ``softmax-fast: error: ...``, and nothing else
  is printed on stderr before it. Exit status 2 for usage errors (a bad option value or
  combination, with ``(see softmax-fast CMD --help)``), 1 for everything else. No traceback
  unless ``--debug``; an exception nobody expected is one line too, naming its type.
* **Warnings** (Python warnings and the commands' own notes, :func:`note_warning`) are held
  while a command runs: printed after it, one line each (``softmax-fast: warning: ...``),
  when it succeeds; folded into the error line when it fails.
* **Ctrl-C** (SIGINT) ends a command with exit status 130 and one line saying what was saved
  (``softmax-fast: interrupted; nothing was saved``). Commands say what they wrote with
  :func:`record_saved`, or describe it themselves with :func:`on_interrupt` (``search``: the
  results kept in the results file). Output files are written atomically, so an interrupted
  write leaves nothing behind.
  If the command does not stop within :data:`INTERRUPT_GRACE` seconds (stuck in compiled
  code, which Ctrl-C cannot reach), a watchdog thread prints that line and ends the process
  (``softmax-fast`` itself only: not when the group is called in-process, by tests).
* A closed standard output (``softmax-fast predict ... | head -1``) ends the command quietly
  (exit status 1, no traceback).

Nothing heavy is imported here: this module loads with ``softmax-fast --help``.
"""

import _thread
import atexit
import contextlib
import errno
import os
import signal
import sys
import threading
import traceback
import warnings

import click

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_USAGE", "CLIError", "GuardedGroup",
           "Interrupted", "debugging", "exit_interrupted", "note_warning", "on_interrupt",
           "one_line", "record_saved", "run_guarded", "usage_line"]

PROG = "softmax-fast"
EXIT_ERROR = 1
EXIT_USAGE = 2
#: 128 + SIGINT, what a shell reports for a program ended by Ctrl-C.
EXIT_INTERRUPTED = 130
#: Longest error line; the rest of a very long message (a remote traceback) is cut.
MAX_LINE = 800
#: Seconds a command has to stop after Ctrl-C before a watchdog thread ends the process (it
#: is stuck in compiled code that never returns to Python, where Ctrl-C cannot reach it).
INTERRUPT_GRACE = 15.0
#: Seconds before a Ctrl-C that CPython dropped is raised again (see _ctrl_c_never_dropped).
REINTERRUPT_DELAY = 0.01
#: Click >= 8.2 shows a group's help for a missing command through this UsageError.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class CLIError(click.ClickException):
    """An error shown as one line on stderr with exit status 1."""

    def show(self, file=None):
        click.echo(f"{PROG}: error: {one_line(self.format_message())}", err=True)


class Interrupted(click.ClickException):
    """Ctrl-C: one line saying what was saved, exit status 130."""

    exit_code = EXIT_INTERRUPTED

    def show(self, file=None):
        click.echo(f"{PROG}: {one_line(self.format_message())}", err=True)


def one_line(text, limit=MAX_LINE):
    """``text`` on one line: its lines joined with spaces, cut to ``limit`` characters."""
    text = " ".join(line.strip() for line in str(text).splitlines() if line.strip())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def usage_line(exc):
    """The one line of a Click usage error: what is wrong, and where the help is."""
    if isinstance(exc, click.BadParameter) and not isinstance(exc, click.MissingParameter):
        hint = exc.param_hint
        if hint is None and exc.param is not None:
            hint = exc.param.get_error_hint(exc.ctx)
        if isinstance(hint, (list, tuple)):
            hint = hint[0] if hint else None
        # Click quotes and joins the names ("'--epochs' / '-e'"): the first one is enough.
        hint = hint.split(" / ")[0].strip("'\"") if hint else None
        message = f"{hint}: {exc.message}" if hint else exc.message
    else:
        message = exc.format_message()
    command = exc.ctx.command_path if exc.ctx is not None else PROG
    return f"{PROG}: error: {one_line(message).rstrip('.')} (see {command} --help)"


# ----------------------------------------------------------------------------------------
# The state of one run: --debug, held warnings, what was saved
# ----------------------------------------------------------------------------------------
def _state():
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return {}
    return ctx.find_root().ensure_object(dict)


def debugging():
    """Whether ``--debug`` was given (show tracebacks)."""
    return bool(_state().get("debug"))


def note_warning(text):
    """Hold a warning of the command's own; it is printed only if the command succeeds."""
    _state().setdefault("notes", []).append(one_line(text))


def record_saved(path):
    """Say that ``path`` was written, for the line an interruption prints."""
    _state().setdefault("saved", []).append(str(path))


def on_interrupt(describe):
    """Let ``describe()`` say what an interruption leaves behind (replaces the default)."""
    _state()["describe_interrupt"] = describe


def _interrupted(state):
    text = None
    describe = state.get("describe_interrupt")
    if describe is not None:
        try:
            text = describe()
        except Exception:  # noqa: BLE001 - the default below is still true
            text = None
    if text is None:
        saved = state.get("saved", [])
        text = (f"saved before it: {', '.join(saved)}; nothing else was written" if saved
                else "nothing was saved")
    return Interrupted(f"interrupted; {text}")


def _warning_lines(state, caught):
    lines = list(state.get("notes", []))
    lines += [one_line(f"{w.category.__name__}: {w.message}") for w in caught]
    return list(dict.fromkeys(lines))  # each once, in order


def _print_warnings(lines):
    for line in lines:
        try:
            click.echo(f"{PROG}: warning: {line}", err=True)
        except OSError:  # stderr closed: nobody to tell
            return


def _fold_warnings(exc, lines):
    """Put the first held warning into the error's one line."""
    if lines and not isinstance(exc, (click.UsageError, Interrupted)):
        more = f" and {len(lines) - 1} more" if len(lines) > 1 else ""
        exc.message = f"{exc.format_message()} (after warning: {lines[0]}{more})"


# ----------------------------------------------------------------------------------------
# Running a command
# ----------------------------------------------------------------------------------------
class GuardedGroup(click.Group):
    """A Click group whose commands follow the rules of this module's docstring."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as exc:
            exc.show()  # the help text, as Click prints it
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            click.echo(usage_line(exc), err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            # Click's own Ctrl-C (while parsing the command line): nothing ran yet.
            click.echo(f"{PROG}: interrupted; nothing was saved", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx):
        state = ctx.ensure_object(dict)
        try:
            return self._invoke_held(ctx, state)
        finally:
            if state.get("process"):
                # The outcome is decided (and its files written): a Ctrl-C from now on would
                # only kill a finished run during the interpreter's exit, with no line said.
                signal.signal(signal.SIGINT, signal.SIG_IGN)

    def _invoke_held(self, ctx, state):
        watchdog = _CtrlCWatchdog(state) if state.get("process") else None
        with watchdog or contextlib.nullcontext(), _ctrl_c_never_dropped(), \
                warnings.catch_warnings(record=True) as caught:
            try:
                result = super().invoke(ctx)
            except BaseException as exc:
                if watchdog is not None and isinstance(exc, KeyboardInterrupt):
                    watchdog.answered.set()  # the command stopped: no need to end it
                replacement = _handled(exc, state, _warning_lines(state, caught))
                if replacement is exc:
                    raise
                raise replacement from exc
        _print_warnings(_warning_lines(state, caught))
        return result


@contextlib.contextmanager
def _ctrl_c_never_dropped():
    """While a command runs, a Ctrl-C that CPython drops is raised again.

    A KeyboardInterrupt raised inside a callback from C (a ctypes callback of llvmlite while
    numba compiles, a ``__del__``) cannot propagate: CPython prints "Exception ignored ..."
    and carries on, and the command would run to its end as if Ctrl-C had not been pressed.
    Such exceptions reach ``sys.unraisablehook``: this one prints nothing and has the interrupt
    raised again in the main thread (``_thread.interrupt_main``, which does nothing if SIGINT
    is not Python's), from another thread a moment later: raised at once, it could land in
    the hook itself, and be dropped again.
    """
    previous = sys.unraisablehook

    def hook(unraisable):
        if issubclass(unraisable.exc_type, KeyboardInterrupt):
            threading.Timer(REINTERRUPT_DELAY, _thread.interrupt_main).start()
            return
        previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


class _CtrlCWatchdog:
    """Ends the process if a Ctrl-C is not answered within :data:`INTERRUPT_GRACE` seconds.

    Python runs signal handlers in the main thread between bytecodes: code that never returns
    from C (a deadlocked OpenMP team, say) never sees Ctrl-C. But the C-level handler, in any
    thread, writes the signal number to the wakeup file descriptor: a thread reading it knows
    of Ctrl-C at once and, if the command has not stopped by the deadline, prints the usual
    line, removes the temporary files of unfinished outputs and exits with status 130.
    """

    def __init__(self, state):
        self.state = state
        self.answered = threading.Event()
        self.write_fd = None
        self.previous_fd = -1

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        try:
            self.previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        except (ValueError, OSError):
            os.close(read_fd)
            os.close(write_fd)
            return self
        self.write_fd = write_fd
        threading.Thread(target=self._watch, args=(read_fd,), name="softmax-fast-ctrl-c",
                         daemon=True).start()
        return self

    def __exit__(self, *exc_info):
        self.answered.set()
        if self.write_fd is not None:
            signal.set_wakeup_fd(self.previous_fd)
            os.close(self.write_fd)  # the watcher reads the end of the pipe and returns
        return False

    def _watch(self, read_fd):
        try:
            while data := os.read(read_fd, 64):
                if signal.SIGINT in data and not self.answered.wait(INTERRUPT_GRACE):
                    self._end()
        finally:
            os.close(read_fd)

    def _end(self):
        message = one_line(_interrupted(self.state).format_message())
        io_module = sys.modules.get("softmax_fast._io")  # loaded if an output was being written
        for path in list(getattr(io_module, "PENDING_OUTPUTS", ())):
            with contextlib.suppress(OSError):
                os.unlink(path)
        with contextlib.suppress(OSError):
            os.write(2, f"{PROG}: {message} (it did not stop within {INTERRUPT_GRACE:g} s and "
                        "was ended)\n".encode())
        os._exit(EXIT_INTERRUPTED)


def exit_interrupted():
    """End the process now with exit status 130, after the usual clean-up.

    For the console entry point only. CPython (3.11) ends a process by SIGINT at exit, ignoring
    the exit status, if a KeyboardInterrupt ever escaped code it evaluated from a string (an
    import building a dataclass when Ctrl-C came, say), even one handled since; a shell would
    then see a status that hides the line printed.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    os._exit(EXIT_INTERRUPTED)


def _handled(exc, state, held):
    """The exception to raise instead of ``exc``: a one-line error, or ``exc`` itself."""
    if isinstance(exc, (click.exceptions.Exit, click.Abort, SystemExit)):
        return exc
    if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
        return exc  # Click silences a closed stdout
    if state.get("debug"):
        _print_warnings(held)
        if isinstance(exc, KeyboardInterrupt):
            traceback.print_exception(exc)
            return _interrupted(state)
        return exc  # the traceback, as asked
    if isinstance(exc, KeyboardInterrupt):
        return _interrupted(state)
    if isinstance(exc, click.ClickException):
        _fold_warnings(exc, held)
        return exc
    if not isinstance(exc, Exception):
        return exc
    error = CLIError(_unexpected_message(exc))
    _fold_warnings(error, held)
    return error


def _unexpected_message(exc):
    if isinstance(exc, MemoryError):
        return (f"out of memory ({exc or 'MemoryError'}); the data or the model is too "
                "large for this machine")
    return (f"unexpected {type(exc).__name__}: {exc} (a bug in softmax-fast? --debug shows "
            "the traceback)")


def run_guarded(ctx, func, *args, **kwargs):
    """Call ``func``; turn expected errors into one-line CLI errors unless --debug."""
    try:
        return func(*args, **kwargs)
    except (click.ClickException, click.Abort):
        raise
    except BrokenPipeError:
        # `softmax-fast ... | head`: the reader left. Silence the flush at exit, like cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        ctx.exit(EXIT_ERROR)
    except (ValueError, TypeError, OSError, FloatingPointError, RuntimeError,
            ImportError) as exc:
        if debugging():
            raise
        message = str(exc) or type(exc).__name__
        if isinstance(exc, FileNotFoundError) and exc.filename:
            message = f"{exc.filename}: no such file or directory"
        raise CLIError(message) from exc
