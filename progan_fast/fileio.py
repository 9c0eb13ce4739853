"""How progan_fast writes files: atomically, never through a symbolic link, with ordinary permissions.

Every file appears by os.replace of a temporary file created next to it (`.<name>.<12 hex digits>.tmp`), so a
reader or a crash sees the old file or the complete new one, and a symbolic link planted under the final name is
replaced rather than followed. Temporary files and directories are created with mode 0666 / 0777 and the umask
applied by the kernel, as open() and mkdir() give, instead of the 0600 / 0700 of tempfile.mkstemp / mkdtemp.

Leftovers of a killed writer are recognised by name and cleaned by the next writer that owns the directory; a
directory in use is marked by an flock held for as long as its owner lives (released by the kernel on kill -9).
"""
import errno
import fcntl
import os
import re
import secrets
import shutil

_TEMP_FILE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


def _temp_path(path):
    directory, base = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")


def atomic_write(path, content, *, durable=False):
    """Writes `content` (bytes, str, or a callable that fills the binary file object it is given) to `path`.

    durable=True also fsyncs the file and its directory, so the new file survives a power loss once this returns.
    """
    path = os.fspath(path)
    tmp = _temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def remove_stale_temp_files(directory):
    """Deletes the temporary files atomic_write leaves when killed mid-write; call it only while holding the
    directory (lock_directory), when no other writer can be using them. Returns the names removed."""
    removed = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if _TEMP_FILE.match(entry.name) and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(entry.name)
    return sorted(removed)


class DirectoryInUse(RuntimeError):
    pass


def lock_directory(directory, name=".lock"):
    """Takes an exclusive flock on `directory`/`name` (created if needed) and returns its file descriptor; the
    lock lasts until the descriptor is closed or the process dies. Raises DirectoryInUse when another process
    holds it."""
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"{path} is a symbolic link; remove it (progan_fast never writes through links)") \
                from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DirectoryInUse(f"{directory} is in use by another progan_fast process") from None
    return fd


def make_locked_temp_dir(parent, prefix):
    """Creates `parent`/`prefix`<random> (mode 0777 minus the umask) and returns (path, fd) with an flock held on
    it, so remove_stale_temp_dirs never mistakes it for a killed writer's leftover. Close fd when done.

    The directory is created under another name and renamed into place once locked: a cleaner scanning for
    `prefix` only ever sees locked directories or dead ones."""
    token = secrets.token_hex(6)
    creating = os.path.join(parent, f".creating-{token}")
    os.mkdir(creating, 0o777)
    try:
        fd = os.open(creating, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = os.path.join(parent, prefix + token)
        os.rename(creating, path)
    except BaseException:
        shutil.rmtree(creating, ignore_errors=True)
        raise
    return path, fd


def remove_stale_temp_dirs(parent, prefix):
    """Deletes the directories `parent`/`prefix`* whose writer is gone (no flock held on them). Returns their
    names."""
    removed = []
    try:
        entries = list(os.scandir(parent))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live writer
        else:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.name)
        finally:
            os.close(fd)
    return sorted(removed)


def file_in_the_way(directory):
    """The first of `directory` and its ancestors that exists and is not a directory (so that `directory` cannot be
    created), or None."""
    path = os.path.abspath(directory)
    while True:
        if os.path.lexists(path) and not os.path.isdir(path):
            return path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def refuse_symlinks(directory, names):
    """Raises ValueError naming the first of `directory`/`names` that is a symbolic link."""
    for name in names:
        path = os.path.join(directory, name)
        if os.path.islink(path):
            raise ValueError(f"{path} is a symbolic link (to {os.readlink(path)}); progan_fast writes only inside "
                             "the run directory and never through links: remove it or choose another directory")
