"""`shoal pack` / `shoal unpack` / `shoal store check` as a user runs them."""

from __future__ import annotations

import os
import pty
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.cli.app import main
from shoal.testing.processes import children, kill_when, read_terminal, wait_all_gone

NAMES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/\x00", exclude_categories=("Cs",)),
    min_size=1,
    max_size=12,
).filter(lambda n: n not in (".", "..") and not n.startswith(".shoal-unpack-"))


def shoal(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def snapshot(root: Path) -> dict[str, tuple[str, int, int, bytes | str]]:
    """Everything unpack promises to restore: kind, mode, mtime and content or link target."""
    found: dict[str, tuple[str, int, int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st_ = path.lstat()
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = ("link", 0, st_.st_mtime_ns, os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir", st_.st_mode & 0o7777, st_.st_mtime_ns, "")
            else:
                found[rel] = ("file", st_.st_mode & 0o7777, st_.st_mtime_ns, path.read_bytes())
    return found


def pack_unpack(capsys: pytest.CaptureFixture[str], src: Path, work: Path, store: str, *extra: str) -> Path:
    image, dest = work / "img.flist", work / "out"
    code, out, err = shoal(capsys, "pack", str(src), "-o", str(image), "--store", store, *extra)
    assert code == 0, err
    assert "bytes stored" in out
    code, _, err = shoal(capsys, "unpack", str(image), str(dest), "--store", store, *extra)
    assert code == 0, err
    return dest


trees = st.dictionaries(
    st.lists(NAMES, min_size=1, max_size=3).map("/".join),
    st.one_of(
        st.binary(max_size=2000),
        st.integers(0, 3).map(lambda seed: (bytes([seed]) * 7 + os.urandom(5)) * 60_000),
    ),
    max_size=8,
)


def build_tree(root: Path, files: dict[str, bytes]) -> None:
    root.mkdir(parents=True)
    for rel, data in files.items():
        target = root / rel
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            continue  # a name used both as a file and as a folder: keep the first
    (root / "empty dir").mkdir(exist_ok=True)
    (root / "link to nowhere").symlink_to("../outside/target")
    os.utime(root / "empty dir", ns=(1_000_000_000, 1_000_000_000))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=trees)
def test_round_trip_file_store(
    files: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path_factory.mktemp("rt")
    build_tree(work / "src", files)
    dest = pack_unpack(capsys, work / "src", work, f"file://{work}/store")
    assert snapshot(dest) == snapshot(work / "src")


def test_copies_in_other_folders_round_trip_and_are_stored_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Past the 512 small files after which worker processes read and seal them: each copy's
    # chunk was sealed by a worker for its original, in an earlier batch.
    originals = {f"a/{i:03d}.txt": f"note {i}\n".encode() * (i + 20) for i in range(400)}
    files = originals | {f"z/copy-{name[2:]}": content for name, content in originals.items()}
    build_tree(tmp_path / "src", files)
    store, image = str(tmp_path / "store"), str(tmp_path / "img.flist")
    code, out, err = shoal(capsys, "pack", str(tmp_path / "src"), "-o", image, "--store", store)
    assert code == 0, err
    assert "chunks       800 (400 new)" in out
    assert shoal(capsys, "unpack", image, str(tmp_path / "out"), "--store", store)[0] == 0
    assert snapshot(tmp_path / "out") == snapshot(tmp_path / "src")
    code, out, _ = shoal(capsys, "store", "check", store)
    assert code == 0, out


@pytest.mark.s3
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=trees)
def test_round_trip_s3_store_encrypted(
    files: dict[str, bytes],
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    s3_url: str,
) -> None:
    work = tmp_path_factory.mktemp("rt")
    build_tree(work / "src", files)
    key = work / "key"
    key.write_text(os.urandom(32).hex())
    dest = pack_unpack(capsys, work / "src", work, s3_url, "--encrypt-key-file", str(key))
    assert snapshot(dest) == snapshot(work / "src")


@pytest.mark.s3
def test_large_files_packed_by_worker_processes_into_s3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], s3_url: str
) -> None:
    # Past the 32 MiB after which the worker processes open the S3 store themselves.
    files = {f"clip{i}.bin": os.urandom(9 * 1024 * 1024) for i in range(4)}
    build_tree(tmp_path / "src", files)
    key = tmp_path / "key"
    key.write_text(os.urandom(32).hex())
    dest = pack_unpack(capsys, tmp_path / "src", tmp_path, s3_url, "--encrypt-key-file", str(key))
    assert snapshot(dest) == snapshot(tmp_path / "src")


@pytest.fixture
def packed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path, Path]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.txt").write_bytes(b"fine\n" * 100)
    (src / "victim.bin").write_bytes(os.urandom(600_000))
    image, store = tmp_path / "img.flist", tmp_path / "store"
    code, _, err = shoal(capsys, "pack", str(src), "-o", str(image), "--store", str(store))
    assert code == 0, err
    return src, image, store


def _chunk_files(store: Path) -> list[Path]:
    return sorted(p for p in store.rglob("*") if p.is_file() and len(p.name) == 64)


def _victim_chunk(store: Path, image: Path) -> Path:
    with sqlite3.connect(image) as db:
        (manifest,) = db.execute("SELECT manifest FROM entries WHERE path = 'victim.bin'").fetchone()
    from shoal.model import Manifest

    first = Manifest.decode(manifest).chunks[0].id.hex()
    return next(p for p in _chunk_files(store) if p.name == first)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_chunk_is_never_written(
    damage: str, packed: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, image, store = packed
    chunk = _victim_chunk(store, image)
    if damage == "flip":
        data = bytearray(chunk.read_bytes())
        data[len(data) // 2] ^= 0x01
        chunk.write_bytes(bytes(data))
    elif damage == "truncate":
        chunk.write_bytes(chunk.read_bytes()[:100])
    else:
        chunk.unlink()
    dest = tmp_path / "out"
    code, _, err = shoal(capsys, "unpack", str(image), str(dest), "--store", str(store))
    assert code == 10
    assert "victim.bin" in err
    assert not (dest / "victim.bin").exists()
    assert (dest / "good.txt").read_bytes() == (src / "good.txt").read_bytes()
    assert [p.name for p in dest.iterdir()] == ["good.txt"]  # no temp file left behind
    code, _, err = shoal(capsys, "store", "check", str(store), "--image", str(image))
    assert code == 4
    assert ("missing" if damage == "delete" else "damaged") in err


def test_store_check_clean(packed: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, image, store = packed
    code, out, _ = shoal(capsys, "store", "check", str(store), "--image", str(image))
    assert code == 0
    assert "verified" in out


def test_store_check_of_a_mistyped_path_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = shoal(capsys, "store", "check", str(tmp_path / "no-such-store"))
    assert code == 3
    assert "no store at" in err
    assert "verified" not in out
    assert not (tmp_path / "no-such-store").exists()


def test_an_image_in_a_missing_folder_is_refused_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build_tree(tmp_path / "src", {"a.txt": b"a\n"})
    image = tmp_path / "no-such-folder" / "x.flist"
    code, _, err = shoal(
        capsys, "pack", str(tmp_path / "src"), "-o", str(image), "--store", str(tmp_path / "s")
    )
    assert code == 3
    assert f"the folder {image.parent} does not exist" in err
    assert not (tmp_path / "s").exists()  # nothing was stored for an image that could not be written


def test_repack_stores_nothing_new(
    packed: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src, image, store = packed
    before = _chunk_files(store)
    code, out, _ = shoal(
        capsys, "pack", str(src), "-o", str(image.with_name("again.flist")), "--store", str(store)
    )
    assert code == 0
    assert "(0 new)" in out
    assert _chunk_files(store) == before


def test_repack_into_same_image_skips_unchanged_files(
    packed: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src, image, store = packed
    (src / "good.txt").write_bytes(b"changed\n")
    code, out, _ = shoal(capsys, "pack", str(src), "-o", str(image), "--store", str(store))
    assert code == 0
    assert "unchanged    1 files" in out  # victim.bin was not read again; good.txt was
    # a chunk the store lost is never reused: the unchanged file is read again and its chunk restored
    victim_chunk = _victim_chunk(store, image)
    victim_chunk.unlink()
    code, out, _ = shoal(capsys, "pack", str(src), "-o", str(image), "--store", str(store))
    assert code == 0
    assert victim_chunk.exists()
    dest = image.parent / "out"
    assert shoal(capsys, "unpack", str(image), str(dest), "--store", str(store))[0] == 0
    assert (dest / "victim.bin").read_bytes() == (src / "victim.bin").read_bytes()
    assert (dest / "good.txt").read_bytes() == b"changed\n"


def test_an_image_and_store_inside_the_packed_folder_are_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `shoal pack . -o backup.flist --store ./chunks`: the image had held its own half-written
    # temporary file and journal, and unpack brought them back as files.
    build_tree(tmp_path / "src", {"notes.txt": b"notes\n", "sub/data.bin": os.urandom(300_000)})
    before = snapshot(tmp_path / "src")
    image, store = tmp_path / "src" / "backup.flist", tmp_path / "src" / "chunks"
    for _ in range(2):  # the second run finds the first one's image and store in the folder
        code, out, err = shoal(capsys, "pack", str(tmp_path / "src"), "-o", str(image), "--store", str(store))
        assert code == 0, err
    assert "left out     backup.flist (the image being written)" in out
    assert "left out     chunks (the chunk store)" in out
    assert ".tmp-" not in out
    code, _, err = shoal(capsys, "unpack", str(image), str(tmp_path / "out"), "--store", str(store))
    assert code == 0, err
    assert snapshot(tmp_path / "out") == before


def test_packing_the_store_itself_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "chunks"
    store.mkdir()
    code, _, err = shoal(
        capsys, "pack", str(store), "-o", str(tmp_path / "x.flist"), "--store", f"file://{store}"
    )
    assert code == 2
    assert "is the chunk store" in err
    assert not [p.name for p in tmp_path.iterdir() if "x.flist" in p.name]  # no image, no temporary file


def test_encrypted_needs_the_right_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "secret.txt").write_bytes(b"marker-plaintext " * 1000)
    key, other = tmp_path / "k1", tmp_path / "k2"
    assert shoal(capsys, "key", "generate", str(key))[0] == 0
    assert shoal(capsys, "key", "generate", str(other))[0] == 0
    assert key.stat().st_mode & 0o777 == 0o600
    store, image = tmp_path / "store", tmp_path / "img.flist"
    code, _, err = shoal(
        capsys, "pack", str(src), "-o", str(image), "--store", str(store), "--encrypt-key-file", str(key)
    )
    assert code == 0, err
    for chunk in _chunk_files(store):
        assert b"marker-plaintext" not in chunk.read_bytes()
    code, _, err = shoal(capsys, "unpack", str(image), str(tmp_path / "o1"), "--store", str(store))
    assert code == 8
    assert "encrypted" in err
    code, _, err = shoal(
        capsys,
        "unpack",
        str(image),
        str(tmp_path / "o2"),
        "--store",
        str(store),
        "--encrypt-key-file",
        str(other),
    )
    assert code == 8
    assert "not the key" in err
    assert not (tmp_path / "o2").exists()
    words = tmp_path / "words"
    from shoal.crypto.mnemonic import key_to_words

    words.write_text(" ".join(key_to_words(bytes.fromhex(key.read_text().strip()))))
    dest = tmp_path / "o3"
    code, _, err = shoal(
        capsys, "unpack", str(image), str(dest), "--store", str(store), "--encrypt-key-file", str(words)
    )
    assert code == 0, err
    assert (dest / "secret.txt").read_bytes() == (src / "secret.txt").read_bytes()


def test_odd_names_and_symlink_loops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ["with space.txt", "ünïcødé 日本.txt", "new\nline.txt", "zero-bytes"]:
        (src / name).write_bytes(name.encode() if name != "zero-bytes" else b"")
    (src / "loop-a").symlink_to("loop-b")
    (src / "loop-b").symlink_to("loop-a")
    (src / "self").symlink_to(".")
    dest = pack_unpack(capsys, src, tmp_path, str(tmp_path / "store"))
    assert snapshot(dest) == snapshot(src)


def test_unreadable_file_is_listed_and_the_rest_packed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "readable.txt").write_text("ok")
    (src / "locked.txt").write_text("secret")
    (src / "locked.txt").chmod(0)
    image, store = tmp_path / "img.flist", tmp_path / "store"
    argv = [sys.executable, "-m", "shoal", "pack", str(src), "-o", str(image), "--store", str(store)]
    if os.getuid() == 0:  # root reads any file: run this pack without the capabilities that allow it
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *argv]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 10, result.stderr
    assert "locked.txt" in result.stderr
    dest = tmp_path / "out"
    code, _, err = shoal(capsys, "unpack", str(image), str(dest), "--store", str(store))
    assert code == 0, err
    assert (dest / "readable.txt").read_text() == "ok"
    assert not (dest / "locked.txt").exists()


def test_file_changing_while_read_is_left_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    growing = src / "growing.log"
    growing.write_bytes(os.urandom(8_000_000))
    (src / "steady.txt").write_text("steady")
    stop = threading.Event()

    def append() -> None:
        with growing.open("ab") as handle:
            while not stop.is_set():
                handle.write(b"x" * 4096)
                handle.flush()

    writer = threading.Thread(target=append)
    writer.start()
    try:
        code, _, err = shoal(
            capsys, "pack", str(src), "-o", str(tmp_path / "i.flist"), "--store", str(tmp_path / "s")
        )
    finally:
        stop.set()
        writer.join()
    assert code == 10
    assert "growing.log" in err
    assert "changed" in err


def _forge_image(image: Path, path: str) -> None:
    with sqlite3.connect(image) as db:
        db.execute(
            "INSERT INTO entries (path, kind, mode, mtime_ns, size, target, manifest)"
            " SELECT ?, kind, mode, mtime_ns, size, target, manifest FROM entries WHERE path = 'good.txt'",
            (path,),
        )


@pytest.mark.parametrize("evil", ["../escaped.txt", "/tmp/absolute.txt", "a/../../x"])
def test_image_entry_outside_dest_is_refused(
    evil: str, packed: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, image, store = packed
    _forge_image(image, evil)
    dest = tmp_path / "deep" / "out"
    code, _, err = shoal(capsys, "unpack", str(image), str(dest), "--store", str(store))
    assert code != 0
    assert "path" in err.lower()
    assert not (tmp_path / "deep" / "escaped.txt").exists()
    assert not Path("/tmp/absolute.txt").exists()


def test_entry_beneath_an_image_symlink_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.txt").write_text("good")
    outside = tmp_path / "outside"
    outside.mkdir()
    (src / "link").symlink_to(outside)
    image, store = tmp_path / "img.flist", tmp_path / "store"
    assert shoal(capsys, "pack", str(src), "-o", str(image), "--store", str(store))[0] == 0
    _forge_image(image, "link/planted.txt")
    code, _, err = shoal(capsys, "unpack", str(image), str(tmp_path / "out"), "--store", str(store))
    assert code == 10
    assert "beneath a symlink" in err
    assert not (outside / "planted.txt").exists()


@pytest.mark.slow
def test_sparse_5gb_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with (src / "sparse.img").open("wb") as handle:
        handle.truncate(5 * 1024**3)
    image = tmp_path / "img.flist"
    # The child reports its own high-water mark (ru_maxrss would start at pytest's size, since the
    # kernel carries the parent's peak across fork and exec), and its worker processes' highest, as
    # they ingest the file: theirs start at the child's size when it started them.
    probe = (
        "import atexit, resource, sys\n"
        "def hwm():\n"
        "    line = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
        "    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "    sys.stderr.write(f'PEAK {line.split()[1]} WORKERS {workers}\\n')\n"
        "atexit.register(hwm)\n"
        "from shoal.cli.app import main\n"
        "main(sys.argv[1:])\n"
    )
    argv = [sys.executable, "-c", probe, "pack", str(src), "-o", str(image), "--store", str(tmp_path / "s")]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    own, _, workers = result.stderr.rsplit("PEAK ", 1)[1].split()[:3]
    peak_mb, workers_mb = int(own) / 1024, int(workers) / 1024
    assert peak_mb < 300, f"pack of a 5 GB file peaked at {peak_mb:.0f} MB"
    assert 0 < workers_mb < 300, f"the worker ingesting a 5 GB file peaked at {workers_mb:.0f} MB"
    with sqlite3.connect(image) as db:
        (size,) = db.execute("SELECT size FROM entries WHERE path = 'sparse.img'").fetchone()
    assert size == 5 * 1024**3
    assert len(_chunk_files(tmp_path / "s")) == 1  # every 4 MiB run of zeros is the same chunk


@pytest.fixture
def videos(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """Past the 32 MiB after which large files are ingested in worker processes."""
    src = tmp_path / "src"
    src.mkdir()
    contents = {f"video{i}.bin": os.urandom(12 * 1024 * 1024) for i in range(6)}
    for name, content in contents.items():
        (src / name).write_bytes(content)
    return src, contents


def _start_pack(src: Path, image: Path, store: Path, **popen: Any) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "shoal", "pack", str(src), "-o", str(image), "--store", str(store)]
    return subprocess.Popen([*argv, "--quiet"], stdout=subprocess.DEVNULL, **popen)


def _storing_in_workers(proc: subprocess.Popen[bytes], store: Path, workers: set[int]) -> Callable[[], bool]:
    """Whether the pack's worker processes (collected into ``workers``) have started storing."""

    def ready() -> bool:
        workers.update(children(proc.pid))  # the parent's own children: both pools' workers
        return len(workers) >= 2 and any(store.rglob("*"))

    return ready


def _a_rerun_packs_everything(
    capsys: pytest.CaptureFixture[str], src: Path, image: Path, store: Path, contents: dict[str, bytes]
) -> None:
    dest = image.parent / "dest"
    assert shoal(capsys, "pack", str(src), "-o", str(image), "--store", str(store))[0] == 0
    assert shoal(capsys, "unpack", str(image), str(dest), "--store", str(store))[0] == 0
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == contents
    code, out, _ = shoal(capsys, "store", "check", str(store))
    assert code == 0, out


def test_kill_mid_pack_of_large_files_leaves_no_worker_and_a_rerun_packs_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], videos: tuple[Path, dict[str, bytes]]
) -> None:
    src, contents = videos
    store, image = tmp_path / "store", tmp_path / "i.flist"
    proc = _start_pack(src, image, store, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    assert kill_when(proc, _storing_in_workers(proc, store, workers)), "the pack ended first"
    assert not wait_all_gone(workers), "a worker process outlived the killed pack"
    assert not image.exists()
    _a_rerun_packs_everything(capsys, src, image, store, contents)


def test_ctrl_c_mid_pack_stops_everything_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], videos: tuple[Path, dict[str, bytes]]
) -> None:
    src, contents = videos
    store, image = tmp_path / "store", tmp_path / "i.flist"
    # Its own process group, as a shell's foreground job: Ctrl-C reaches the workers too.
    proc = _start_pack(src, image, store, stderr=subprocess.PIPE, start_new_session=True)
    workers: set[int] = set()
    ready = _storing_in_workers(proc, store, workers)
    deadline = time.monotonic() + 60
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the pack ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 130
    assert err.decode().strip() == "interrupted"  # no traceback from any process
    assert not wait_all_gone(workers), "a worker process outlived the interrupted pack"
    assert not image.exists()
    _a_rerun_packs_everything(capsys, src, image, store, contents)


def test_on_a_terminal_the_bar_counts_every_byte_of_the_forked_workers(tmp_path: Path) -> None:
    # A real terminal, so the bar shows, and a fresh process, which forks its workers before the
    # bar's thread starts: the large files' bytes come from those workers.
    files = {f"clip{i}.bin": os.urandom(12 * 1024 * 1024) for i in range(4)}
    files |= {f"notes/{i}.txt": f"note {i}\n".encode() * 50 for i in range(600)}
    build_tree(tmp_path / "src", files)
    total = sum(len(content) for content in files.values())
    leader, follower = pty.openpty()
    argv = [sys.executable, "-m", "shoal", "pack", str(tmp_path / "src"), "-o", str(tmp_path / "i.flist")]
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    with subprocess.Popen(
        [*argv, "--store", str(tmp_path / "store")], stdin=follower, stdout=follower, stderr=follower, env=env
    ) as proc:
        os.close(follower)
        shown = read_terminal(leader)
        assert proc.wait(60) == 0, shown
    os.close(leader)
    frames = re.findall(r"([\d.]+)/([\d.]+) MB", shown)
    assert frames, shown
    assert frames[-1] == (f"{total / 1e6:.1f}", f"{total / 1e6:.1f}"), frames[-3:]
    assert "files        604" in shown
